"""Step ``baseline`` (phase 1): train the stage-1 classifier; export weights, predictions and features."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from streetvision import layout
from streetvision.config import section_settings
from streetvision.data.views import challenge_plan, samples_of
from streetvision.intervals import scores_with_intervals
from streetvision.logs import log_result
from streetvision.metrics import compute_all_metrics
from streetvision.models.backbone import count_parameters, merged
from streetvision.models.spec import build_trainable_classifier
from streetvision.phases import step_recorder
from streetvision.train.checkpoints import restore_checkpoint
from streetvision.train.classifier_module import MONITOR, BaselineModule, predict_with_features
from streetvision.train.datamodule import SplitDataModule, TrainingDraws
from streetvision.train.tracking import log_headline
from streetvision.train.trainer import (
    build_trainer,
    compile_if_possible,
    export_curves,
    fit_resumable,
    loader_workers,
    start_training_phase,
    training_observers,
)

STEP = "baseline"


def run_baseline(*, cfg: dict, data_dir: str | Path, explora_dir: str | Path | None = None,
                 out_dir: str | Path, experiment: str, gpus: int = 0, threads: int | None = None,
                 workflow_dir: str | None = None) -> Path | None:
    """Train and export phase 1. Returns the manifest path (None on non-zero DDP ranks).

    ``cfg`` holds the ``model``, ``train`` and ``challenge`` sections.
    """
    model_cfg, train_cfg = cfg["model"], cfg["train"]
    out_dir = Path(out_dir)
    upstream = [layout.manifest_of(data_dir)] + ([layout.manifest_of(explora_dir)] if explora_dir else [])
    workers = loader_workers(train_cfg["num_workers"], threads)
    accelerator, devices = start_training_phase(
        STEP, out_dir, cfg, seed=train_cfg["seed"], gpus=gpus, cpu_devices=train_cfg["cpu_devices"],
        upstream=upstream, threads=threads, loader_workers=workers)
    recorder = step_recorder(STEP, out_dir, experiment, cfg, consumes=upstream, seed=train_cfg["seed"],
                             workflow_dir=workflow_dir, device=f"{accelerator}x{devices}",
                             scratch=layout.Training.SCRATCH)

    # Phase 4's merged backbone, when there is one, takes the place of the pretrained weights.
    adapted = Path(explora_dir) / layout.Explora.BACKBONE if explora_dir else None
    model, spec = build_trainable_classifier(model_cfg, adapted)
    draws = section_settings(TrainingDraws, {**train_cfg, "num_workers": workers})
    datamodule = SplitDataModule(layout.load_index(data_dir), spec.data, draws, cfg["challenge"]["seed"],
                                 pin_memory=accelerator == "gpu")
    module = BaselineModule(model, lr=train_cfg["lr"], weight_decay=train_cfg["weight_decay"],
                            warmup_fraction=train_cfg["warmup_fraction"],
                            layer_decay=train_cfg["layer_decay"],
                            pos_weight=train_cfg["pos_weight"],
                            aux_max_pool_weight=train_cfg["aux_max_pool_weight"],
                            label_smoothing=train_cfg["label_smoothing"])
    compiled = compile_if_possible(model, train_cfg["compile"], accelerator)
    trackers, progress = training_observers(STEP, experiment, cfg, "train", out_dir, workflow_dir,
                                            loss="train/loss", score=MONITOR)
    trainer, checkpoint = build_trainer(
        out_dir, accelerator=accelerator, devices=devices, max_epochs=train_cfg["max_epochs"],
        precision=train_cfg["precision"], monitor=MONITOR, patience=train_cfg["patience"], trackers=trackers,
        checkpoint_interval_minutes=train_cfg["checkpoint_interval_minutes"],
        accumulate_grad_batches=train_cfg["accumulate_grad_batches"],
        gradient_clip_val=train_cfg["gradient_clip_val"],
        extra_callbacks=[*weight_averaging(train_cfg), *progress],
        distributed_sampler=False)  # the domain sampler shards itself
    record = fit_resumable(trainer, checkpoint, module, out_dir, datamodule=datamodule)
    if record is None:  # DDP ranks > 0: rank 0 exports
        return None
    restore_checkpoint(module, out_dir, record)
    parameters = count_parameters(model)  # as trained (with LoRA: the adapters and the head)
    model.backbone = merged(model.backbone)  # model.freeze lora: plain weights from here on

    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    recorder.write_tensors(layout.Baseline.MODEL, model.state_dict(), {"format": "streetvision-classifier"})
    recorder.write_json(layout.Baseline.MODEL_CONFIG, spec.to_record())
    metrics = {split: {view: export_split(recorder, model, datamodule, split, view, device)
                       for view in layout.Baseline.VIEWS} for split in layout.Baseline.PREDICTED_SPLITS}
    export_curves(recorder)
    recorder.write_json(layout.Baseline.METRICS, metrics)
    test = metrics["val_test"]
    recorder.metrics.update({
        "val_test": {view: {k: test[view][k] for k in ("mcc", "accuracy", "auroc", "ece")} for view in test},
        "domain_weights": datamodule.domain_weights,
        "val_select_mcc_best": record["best_score"],
        "global_step": record["global_step"], "epochs": record["epochs"],
        "resumed_from_step": record["resumed_from_step"],
        "parameters": parameters, "compiled": compiled,
        "loader_wait_fraction": record.get("loader_wait_fraction"),  # TrainingClock's sampled steps
    })
    recorder.metrics["tracking"] = log_headline(trackers, headline(out_dir, metrics, record),
                                                step=record["global_step"])
    waited = record.get("loader_wait_fraction")
    waited = f"; steps waited {waited:.0%} of their time for batches" if waited is not None else ""
    log_result(STEP, experiment, f"val_test MCC {test['challenge']['mcc']:.3f} on the challenge pass, "
                                 f"{test['clean']['mcc']:.3f} clean "
                                 f"(at 0.5; {record['epochs']} epochs{waited})")
    return recorder.finish()


def headline(out_dir: Path, metrics: dict, record: dict) -> dict[str, float | None]:
    """Phase 1's numbers for the trackers: val_test through the challenge pass at threshold 0.5 (what
    validators would score before phase 2 moves it), with 95 % bootstrap intervals, and the clean view."""
    test = layout.predictions_of(out_dir, "val_test")
    scores = scores_with_intervals(test["label"], test["probability"])
    numbers = {"threshold": 0.5, "val_select_mcc_best": record["best_score"],
               "val_test_auroc": metrics["val_test"]["challenge"]["auroc"],
               "val_test_clean_mcc": metrics["val_test"]["clean"]["mcc"]}
    for key in ("mcc", "accuracy", "natix_reward"):
        interval = scores[f"{key}_ci"] or (None, None)
        numbers |= {f"val_test_{key}": scores[key], f"val_test_{key}_ci_low": interval[0],
                    f"val_test_{key}_ci_high": interval[1]}
    return numbers


def weight_averaging(train_cfg: dict) -> list:
    """``train.ema_decay``: Lightning's EMA of the weights (what validation, the checkpoints and the export
    then hold; its state is saved in and restored from every checkpoint)."""
    if train_cfg["ema_decay"] is None:
        return []
    from lightning.pytorch.callbacks import EMAWeightAveraging

    return [EMAWeightAveraging(decay=train_cfg["ema_decay"])]


def export_split(recorder, model, datamodule: SplitDataModule, split: str, view: str,
                 device: torch.device) -> dict:
    """Predictions of one split through one view; for the challenge pass, the challenge each image got and,
    for the splits later phases fit on, the pooled features. Returns the split's metrics at 0.5."""
    frame = datamodule.split(split)
    logits, features = predict_with_features(model, datamodule.eval_loader(split, view), device)
    table = pd.DataFrame({"id": frame["id"], "label": frame["label"].astype("int8"),
                          "domain": frame["domain"], "source": frame["source"],
                          "logit": logits.numpy().astype("float64"),
                          "probability": torch.sigmoid(logits.double()).numpy()})
    if view == "challenge":
        table = pd.concat([table, challenge_plan(samples_of(frame), datamodule.challenge_seed)], axis=1)
    recorder.write_parquet(layout.Baseline.predictions(split, view), table)
    if view == "challenge" and split in layout.Baseline.FEATURE_SPLITS:
        recorder.write_tensors(layout.Baseline.features(split), {"features": features},
                               {"ids": json.dumps(frame["id"].tolist()), "order": "same as the predictions"})
    return compute_all_metrics(table["label"], table["probability"], threshold=0.5)
