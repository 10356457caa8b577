"""Phase 4: run ExPLoRA, export the merged backbone, prove the export by reloading it, probe it."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from streetvision.data.phase import load_index
from streetvision.data.transforms import eval_transform
from streetvision.io.atomic import atomic_save_tensors, atomic_write_json
from streetvision.io.manifest import MANIFEST_NAME
from streetvision.metrics import compute_mcc
from streetvision.models.backbone import (
    BackboneSpec,
    build_backbone,
    count_parameters,
    data_config,
    rebuild_backbone,
)
from streetvision.train.explora import ExploraModule, MultiCrop, add_lora, explora_frame, explora_loader
from streetvision.train.trainer import (
    CHECKPOINT_DIR,
    LAST,
    build_trainer,
    export_curves,
    fit_resumable,
    start_training_phase,
)

log = logging.getLogger(__name__)

BACKBONE_FILE = "backbone.safetensors"
VALIDATION_BATCH = 16


class ExportValidationError(RuntimeError):
    """The saved backbone does not reproduce the adapted model's embeddings."""


def fixed_batch(frame: pd.DataFrame, spec: dict, size: int = VALIDATION_BATCH) -> torch.Tensor:
    """A deterministic batch from ExPLoRA's own (train/unlabeled) images for the load-back check."""
    transform = eval_transform(spec["img_size"], spec["mean"], spec["std"], spec["interpolation"])
    paths = frame.sort_values("id")["path"].head(size)
    return torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])


@torch.inference_mode()
def embed(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model.eval()(images).float()


def validate_export(reference: nn.Module, path: Path, spec: BackboneSpec, batch: torch.Tensor, tolerance: float) -> float:
    """Rebuild the backbone from config, load ``path`` strictly, compare embeddings; raise if they differ."""
    from safetensors.torch import load_file

    fresh = rebuild_backbone(spec)
    try:
        fresh.load_state_dict(load_file(path), strict=True)
    except RuntimeError as err:
        raise ExportValidationError(f"{path}: does not load into {spec.name}: {err}") from err
    difference = (embed(fresh, batch) - embed(reference, batch)).abs().max().item()
    if not difference <= tolerance:
        raise ExportValidationError(
            f"{path}: reloaded backbone differs from the adapted model by max |Δ| = {difference:.3g} "
            f"(tolerance {tolerance:g}); the export is incomplete or wrong")
    return difference


def linear_probe(backbone: nn.Module, index: pd.DataFrame, spec: dict, max_train: int, seed: int) -> float:
    """Logistic regression on frozen features: fit on train, MCC on val_test. Fits nothing on val_test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    transform = eval_transform(spec["img_size"], spec["mean"], spec["std"], spec["interpolation"])

    def features(frame: pd.DataFrame) -> np.ndarray:
        chunks = []
        for start in range(0, len(frame), 64):
            images = torch.stack([transform(Image.open(p).convert("RGB")) for p in frame["path"].iloc[start:start + 64]])
            chunks.append(embed(backbone, images).numpy())
        return np.concatenate(chunks)

    train = index[index["split"] == "train"].sample(frac=1.0, random_state=seed).head(max_train)
    test = index[index["split"] == "val_test"]
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(features(train), train["label"].astype(int))
    return compute_mcc(test["label"].astype(int), probe.predict(features(test)))


def run_explora_phase(cfg: dict, data_dir: str | Path, out_dir: str | Path, experiment: str, gpus: int = 0,
                      workflow_dir: str | None = None) -> Path | None:
    model_cfg, ex_cfg = cfg["model"], cfg["explora"]
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    recorder, accelerator, devices = start_training_phase(
        out_dir, "phase4_explora", experiment, {"model": model_cfg, "explora": ex_cfg}, seed=ex_cfg["seed"],
        gpus=gpus, cpu_devices=ex_cfg["cpu_devices"], upstream=[data_dir / MANIFEST_NAME], workflow_dir=workflow_dir)

    index = load_index(data_dir)
    base = build_backbone(model_cfg)
    spec = data_config(base, model_cfg["img_size"])
    frame = explora_frame(index, ex_cfg["splits"])
    local_size = ex_cfg["local_crop_size"] or model_cfg["img_size"]
    crops = MultiCrop(model_cfg["img_size"], local_size, ex_cfg["n_local_crops"], ex_cfg["global_scale"],
                      ex_cfg["local_scale"], spec["mean"], spec["std"])
    loader = explora_loader(index, ex_cfg["splits"], crops, ex_cfg["batch_size"], ex_cfg["num_workers"])
    module = ExploraModule(add_lora(copy.deepcopy(base), ex_cfg), ex_cfg)
    trainer, checkpoint = build_trainer(out_dir, accelerator=accelerator, devices=devices,
                                        max_epochs=ex_cfg["max_epochs"], precision=ex_cfg["precision"],
                                        find_unused_parameters=True)
    record = fit_resumable(trainer, checkpoint, module, out_dir, train_dataloaders=loader)
    if record is None:
        return None
    # The final state (teacher included) comes from the checkpoint: training may have ended in an earlier run.
    state = torch.load(out_dir / CHECKPOINT_DIR / LAST, map_location="cpu", weights_only=False)["state_dict"]
    module.load_state_dict(state)
    return _export(recorder, module, base, model_cfg, ex_cfg, spec, frame, index, record)


def _export(recorder, module: ExploraModule, base: nn.Module, model_cfg: dict, ex_cfg: dict, spec: dict,
            frame: pd.DataFrame, index: pd.DataFrame, record: dict) -> Path:
    teacher = module.teacher.cpu()  # the EMA teacher is DINO's output model
    batch = fixed_batch(frame, spec)
    adapted_embeddings = embed(teacher, batch)
    merged = copy.deepcopy(teacher).merge_and_unload()
    atomic_save_tensors(recorder.path(BACKBONE_FILE), merged.state_dict(), {"format": "timm-backbone"})
    backbone_spec = BackboneSpec.from_config(model_cfg)
    load_back = validate_export(teacher, recorder.path(BACKBONE_FILE), backbone_spec, batch, ex_cfg["export_tolerance"])
    adaptation = (adapted_embeddings - embed(base, batch)).abs().max().item()
    if not adaptation > 10 * ex_cfg["export_tolerance"]:
        # An export that silently dropped the adapter would pass the load-back check too.
        raise ExportValidationError(
            f"ExPLoRA changed the backbone's embeddings by only max |Δ| = {adaptation:.3g} (≤ 10 × "
            f"explora.export_tolerance {ex_cfg['export_tolerance']:g}): the load-back check cannot tell a good "
            "export from one without the adapter. Train longer, raise explora.lr, or lower the tolerance.")
    params = {"backbone_trainable": count_parameters(module.student)["trainable"],  # LoRA + unfrozen blocks
              "backbone_total": count_parameters(base)["total"],
              "dino_head": count_parameters(module.student_head)["trainable"]}  # discarded after phase 4
    summary = {
        "load_back_max_abs_diff": load_back, "adaptation_max_abs_change": adaptation, "parameters": params,
        "trainable_fraction_of_backbone": params["backbone_trainable"] / params["backbone_total"],
        "images_used": {split: int((frame["split"] == split).sum()) for split in ex_cfg["splits"]},
        "global_step": record["global_step"], "epochs": record["epochs"], "resumed_from_step": record["resumed_from_step"],
    }
    if ex_cfg["linear_probe"]:  # evaluation only, after the backbone is saved
        summary["linear_probe_val_test_mcc"] = {
            "before": linear_probe(base, index, spec, ex_cfg["probe_max_train"], ex_cfg["seed"]),
            "after": linear_probe(merged, index, spec, ex_cfg["probe_max_train"], ex_cfg["seed"]),
        }
    atomic_write_json(recorder.path("backbone_config.json"), {"backbone": backbone_spec.name, "img_size": backbone_spec.img_size,
                                                              "backbone_kwargs": backbone_spec.kwargs, "data": spec})
    atomic_write_json(recorder.path("explora.json"), summary)
    export_curves(recorder)
    for name in (BACKBONE_FILE, "backbone_config.json", "explora.json"):
        recorder.add_artifact(name)
    recorder.metrics.update(summary)
    log.info("ExPLoRA done: %d trainable of %d backbone parameters; load-back max|Δ| %.2e; adaptation max|Δ| %.3g",
             params["backbone_trainable"], params["backbone_total"], load_back, adaptation)
    return recorder.finish()
