"""Trainer wiring shared by the training phases: devices, precision, callbacks, logging, resume."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from streetvision.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from streetvision.io.hashing import config_hash, sha256_file
from streetvision.io.manifest import PhaseRecorder
from streetvision.layout import Training
from streetvision.train.devices import acquire_gpus

log = logging.getLogger(__name__)

CHECKPOINT_DIR, LAST, DONE_MARKER = Training.CHECKPOINTS, Training.LAST, Training.DONE
RUN_KEY = Training.RUN_KEY  # hash of the config + input manifests the checkpoints belong to


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written atomically, so a kill mid-save never leaves a torn ``last.ckpt`` to resume from."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())


def resolve_devices(requested_gpus: int, cpu_devices: int = 1) -> tuple[str, int]:
    """(accelerator, devices): GPUs when asked for and present, else CPU processes (gloo for DDP)."""
    if requested_gpus > 0 and torch.cuda.is_available():
        return "gpu", requested_gpus
    if requested_gpus > 0:
        log.warning("the rule asks for %d GPU(s) but none is visible: training on CPU", requested_gpus)
    return "cpu", max(1, cpu_devices)


def resume_checkpoint(phase_dir: Path) -> Path | None:
    last = phase_dir / CHECKPOINT_DIR / LAST
    return last if last.is_file() else None


def discard_stale_training(out_dir: Path, run_key: str) -> None:
    """Checkpoints resume only the same run: another config or other inputs start from scratch.

    Runs on rank 0 only (DDP children start later, inside ``fit``).
    """
    if rank_zero_only.rank != 0:
        return
    key_file = out_dir / RUN_KEY
    if key_file.is_file() and key_file.read_text() == run_key:
        return
    for stale in (out_dir / CHECKPOINT_DIR, out_dir / Training.LOGS, out_dir / Training.TENSORBOARD):
        shutil.rmtree(stale, ignore_errors=True)
    (out_dir / DONE_MARKER).unlink(missing_ok=True)
    atomic_write_text(key_file, run_key)


def fit_resumable(trainer: L.Trainer, checkpoint: ModelCheckpoint, module: L.LightningModule, out_dir: Path,
                  **fit_kwargs) -> dict | None:
    """Fit, resuming from ``last.ckpt`` if one exists; skip fitting if a finished run is recorded.

    Returns the run record (best checkpoint, steps, where it resumed from) on rank 0, None elsewhere.
    """
    marker = out_dir / DONE_MARKER
    if marker.is_file():
        log.info("training already complete (%s): skipping to export", marker)
        return json.loads(marker.read_text())
    resume = resume_checkpoint(out_dir)
    resumed_from = None
    if resume:
        resumed_from = int(torch.load(resume, map_location="cpu", weights_only=False).get("global_step", 0))
        log.info("resuming from %s at global step %d", resume, resumed_from)
    trainer.fit(module, ckpt_path=resume, **fit_kwargs)
    if trainer.global_rank != 0:
        return None
    record = {
        "best_checkpoint": Path(checkpoint.best_model_path).name if checkpoint.best_model_path else None,
        "best_score": float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None,
        "global_step": trainer.global_step, "epochs": trainer.current_epoch, "resumed_from_step": resumed_from,
        "accelerator": trainer.accelerator.__class__.__name__, "devices": trainer.num_devices,
    }
    atomic_write_json(marker, record)
    return record


def start_training_phase(out_dir: Path, phase: str, experiment: str, config_section: dict, *, seed: int,
                         gpus: int, cpu_devices: int, upstream: list[Path], workflow_dir: str | None):
    """Common start of a training phase: seed, devices (locking GPUs), recorder, inputs, stale checkpoints.

    Returns (recorder, accelerator, devices).
    """
    L.seed_everything(seed, workers=True, verbose=False)
    accelerator, devices = resolve_devices(gpus, cpu_devices)
    if accelerator == "gpu":
        acquire_gpus(devices)
    recorder = PhaseRecorder(out_dir, phase, experiment, config_section, consumes=upstream, seed=seed,
                             workflow_dir=workflow_dir, device=f"{accelerator}x{devices}", scratch=Training.SCRATCH)
    discard_stale_training(out_dir, config_hash([config_section, *map(sha256_file, upstream)]))
    return recorder, accelerator, devices


def restore_checkpoint(module: L.LightningModule, out_dir: Path, name: str | None = None) -> None:
    """Load a checkpoint's weights (default ``last.ckpt``) into ``module``: training may have ended in an
    earlier run, so the final state always comes from disk, never from memory."""
    path = out_dir / CHECKPOINT_DIR / (name or LAST)
    module.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["state_dict"])


def export_curves(recorder: PhaseRecorder) -> None:
    """Lightning's CSV log becomes the phase's ``curves.csv`` artifact."""
    curves = recorder.phase_dir / Training.LOGS / "metrics.csv"
    if curves.is_file():
        recorder.copy_file(Training.CURVES, curves)


def show_progress_bar() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


def build_trainer(phase_dir: Path, *, accelerator: str, devices: int, max_epochs: int, precision: str,
                  monitor: str | None = None, patience: int = 0, tensorboard: bool = False,
                  max_steps: int = -1, find_unused_parameters: bool = False, extra_callbacks=(),
                  distributed_sampler: bool = True) -> tuple[L.Trainer, ModelCheckpoint]:
    if monitor:  # best by the monitored metric, plus last.ckpt to resume from
        checkpoint = ModelCheckpoint(dirpath=phase_dir / CHECKPOINT_DIR, filename="best", monitor=monitor,
                                     mode="max", save_last=True, save_top_k=1)
    else:  # nothing to rank by: keep only the newest, named last.ckpt, every epoch
        checkpoint = ModelCheckpoint(dirpath=phase_dir / CHECKPOINT_DIR, filename=Path(LAST).stem, save_top_k=1,
                                     save_last=False, every_n_epochs=1, enable_version_counter=False)
    callbacks = [checkpoint, *extra_callbacks]
    if monitor and patience > 0:
        callbacks.append(EarlyStopping(monitor=monitor, mode="max", patience=patience))
    loggers = [CSVLogger(phase_dir, name=Training.LOGS, version="")]
    if tensorboard:
        try:
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(phase_dir, name=Training.TENSORBOARD, version=""))
        except ModuleNotFoundError:
            log.warning("train.tensorboard is on but tensorboard is not installed: CSV logs only")
    strategy = "auto"
    if devices > 1:
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(find_unused_parameters=find_unused_parameters,
                               process_group_backend="gloo" if accelerator == "cpu" else None)
    plugins = [AtomicCheckpointIO()]
    if os.environ.get("SLURM_JOB_ID"):
        from lightning.pytorch.plugins.environments import SLURMEnvironment

        plugins.append(SLURMEnvironment(auto_requeue=True, requeue_signal=signal.SIGUSR1))
    trainer = L.Trainer(
        accelerator=accelerator, devices=devices, strategy=strategy, precision=precision,
        max_epochs=max_epochs, max_steps=max_steps, callbacks=callbacks, logger=loggers, plugins=plugins,
        enable_progress_bar=show_progress_bar(), log_every_n_steps=10, enable_model_summary=False,
        default_root_dir=phase_dir, num_sanity_val_steps=0, use_distributed_sampler=distributed_sampler,
    )
    return trainer, checkpoint
