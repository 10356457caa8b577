"""Phase 1: train the stage-1 classifier, then write weights, per-split predictions and features."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import torch

from streetvision.data.phase import load_index
from streetvision.io.atomic import (
    atomic_save_tensors,
    atomic_write_json,
    atomic_write_with,
)
from streetvision.io.manifest import MANIFEST_NAME, PhaseRecorder
from streetvision.metrics import compute_all_metrics
from streetvision.models.backbone import (
    BackboneSpec,
    apply_freezing,
    build_backbone,
    count_parameters,
    data_config,
    rebuild_backbone,
)
from streetvision.models.classifier import RoadworkClassifier
from streetvision.train.baseline import MONITOR, BaselineModule
from streetvision.train.datamodule import SplitDataModule
from streetvision.train.trainer import (
    CHECKPOINT_DIR,
    LAST,
    build_trainer,
    export_curves,
    fit_resumable,
    start_training_phase,
)

log = logging.getLogger(__name__)

PREDICTED_SPLITS = ("val_select", "val_calib", "val_conformal", "val_test")
FEATURE_SPLITS = ("val_calib", "val_conformal", "val_test")
MODEL_FILE = "model.safetensors"
MODEL_CONFIG = "model_config.json"


@torch.inference_mode()
def predict(model: RoadworkClassifier, loader, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, pooled features) for every sample of the loader, in order."""
    model.eval().to(device)
    logits, features = [], []
    for images, _, _ in loader:
        batch_logits, batch_features = model.forward_with_features(images.to(device))
        logits.append(batch_logits.float().cpu())
        features.append(batch_features.float().cpu())
    return torch.cat(logits), torch.cat(features)


def model_config_record(model_cfg: dict, spec: dict) -> dict:
    """What a loader needs to rebuild the classifier and its eval transform (saved beside the weights)."""
    backbone = BackboneSpec.from_config(model_cfg)
    return {"backbone": backbone.name, "img_size": backbone.img_size, "backbone_kwargs": backbone.kwargs,
            "head_hidden": model_cfg["head_hidden"], "head_dropout": model_cfg["head_dropout"], "data": spec}


def build_classifier(model_cfg: dict, adapted_backbone: Path | None = None) -> RoadworkClassifier:
    if adapted_backbone is None:
        backbone = build_backbone(model_cfg)
    else:  # phase 4's merged backbone takes the place of the pretrained weights
        from safetensors.torch import load_file

        backbone = rebuild_backbone(BackboneSpec.from_config(model_cfg))
        try:
            backbone.load_state_dict(load_file(adapted_backbone), strict=True)
        except RuntimeError as err:
            raise ValueError(f"{adapted_backbone}: does not fit {model_cfg['backbone']}: {err}") from err
    apply_freezing(backbone, model_cfg["freeze"], model_cfg["trainable_blocks"])
    return RoadworkClassifier(backbone, model_cfg["head_hidden"], model_cfg["head_dropout"])


def train(module: BaselineModule, datamodule: SplitDataModule, out_dir: Path, train_cfg: dict,
          accelerator: str, devices: int) -> dict | None:
    """Fit (resuming from ``last.ckpt`` if present); returns the run record on rank 0, None elsewhere."""
    trainer, checkpoint = build_trainer(
        out_dir, accelerator=accelerator, devices=devices, max_epochs=train_cfg["max_epochs"],
        precision=train_cfg["precision"], monitor=MONITOR, patience=train_cfg["patience"],
        tensorboard=train_cfg["tensorboard"])
    return fit_resumable(trainer, checkpoint, module, out_dir, datamodule=datamodule)


def run_baseline_phase(cfg: dict, data_dir: str | Path, out_dir: str | Path, experiment: str, gpus: int = 0,
                       workflow_dir: str | None = None, explora_dir: str | Path | None = None) -> Path | None:
    """Train and export phase 1. Returns the manifest path (None on non-zero DDP ranks)."""
    model_cfg, train_cfg = cfg["model"], cfg["train"]
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    upstream = [data_dir / MANIFEST_NAME]
    adapted = None
    if explora_dir is not None:
        upstream.append(Path(explora_dir) / MANIFEST_NAME)
        adapted = Path(explora_dir) / "backbone.safetensors"
    recorder, accelerator, devices = start_training_phase(
        out_dir, "phase1_baseline", experiment, {"model": model_cfg, "train": train_cfg}, seed=train_cfg["seed"],
        gpus=gpus, cpu_devices=train_cfg["cpu_devices"], upstream=upstream, workflow_dir=workflow_dir)

    model = build_classifier(model_cfg, adapted)
    spec = data_config(model.backbone, model_cfg["img_size"])
    datamodule = SplitDataModule(load_index(data_dir), spec, train_cfg["batch_size"], train_cfg["num_workers"],
                                 train_cfg["augment_levels"])
    module = BaselineModule(model, lr=train_cfg["lr"], weight_decay=train_cfg["weight_decay"],
                            warmup_fraction=train_cfg["warmup_fraction"], layer_decay=train_cfg["layer_decay"],
                            pos_weight=train_cfg["pos_weight"])
    record = train(module, datamodule, out_dir, train_cfg, accelerator, devices)
    if record is None:
        return None
    best = out_dir / CHECKPOINT_DIR / (record["best_checkpoint"] or LAST)
    state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
    module.load_state_dict(state)
    return _export(recorder, model, model_cfg, spec, datamodule, record, accelerator)


def _export(recorder: PhaseRecorder, model: RoadworkClassifier, model_cfg: dict, spec: dict,
            datamodule: SplitDataModule, record: dict, accelerator: str) -> Path:
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    atomic_save_tensors(recorder.path(MODEL_FILE), model.state_dict(), {"format": "streetvision-classifier"})
    atomic_write_json(recorder.path(MODEL_CONFIG), model_config_record(model_cfg, spec))
    metrics = {}
    for split in PREDICTED_SPLITS:
        frame = datamodule.split(split)
        logits, features = predict(model, datamodule.eval_loader(split), device)
        table = pd.DataFrame({"id": frame["id"], "label": frame["label"].astype("int8"),
                              "logit": logits.numpy().astype("float64"),
                              "probability": torch.sigmoid(logits.double()).numpy()})
        atomic_write_with(recorder.path(f"predictions/{split}.parquet"), lambda tmp, t=table: t.to_parquet(tmp, index=False))
        recorder.add_artifact(f"predictions/{split}.parquet")
        if split in FEATURE_SPLITS:
            atomic_save_tensors(recorder.path(f"features/{split}.safetensors"), {"features": features},
                                {"ids": json.dumps(frame["id"].tolist()), "order": "same as predictions/<split>.parquet"})
            recorder.add_artifact(f"features/{split}.safetensors")
        metrics[split] = compute_all_metrics(table["label"], table["probability"], threshold=0.5)
    export_curves(recorder)
    atomic_write_json(recorder.path("metrics.json"), metrics)
    for name in (MODEL_FILE, MODEL_CONFIG, "metrics.json"):
        recorder.add_artifact(name)
    recorder.metrics.update({
        "val_test": {k: metrics["val_test"][k] for k in ("mcc", "accuracy", "natix_reward", "auroc", "ece")},
        "val_select_mcc_best": record["best_score"],
        "global_step": record["global_step"], "epochs": record["epochs"],
        "resumed_from_step": record["resumed_from_step"],
        "parameters": count_parameters(model),
    })
    log.info("phase 1 done: val_test MCC %.4f, accuracy %.4f", metrics["val_test"]["mcc"], metrics["val_test"]["accuracy"])
    return recorder.finish()
