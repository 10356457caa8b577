"""Trainer wiring shared by the training phases: devices, precision, callbacks, logging, resume."""

from __future__ import annotations

import io
import logging
import os
import signal
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from streetvision.io.atomic import atomic_write_bytes

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"


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


def show_progress_bar() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


def build_trainer(phase_dir: Path, *, accelerator: str, devices: int, max_epochs: int, precision: str,
                  monitor: str | None = None, patience: int = 0, tensorboard: bool = False,
                  max_steps: int = -1, find_unused_parameters: bool = False, extra_callbacks=()) -> tuple[L.Trainer, ModelCheckpoint]:
    checkpoint = ModelCheckpoint(dirpath=phase_dir / CHECKPOINT_DIR, filename="best", monitor=monitor,
                                 mode="max", save_last=True, save_top_k=1 if monitor else 0)
    callbacks = [checkpoint, *extra_callbacks]
    if monitor and patience > 0:
        callbacks.append(EarlyStopping(monitor=monitor, mode="max", patience=patience))
    loggers = [CSVLogger(phase_dir, name="logs", version="")]
    if tensorboard:
        try:
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(phase_dir, name="tensorboard", version=""))
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
        default_root_dir=phase_dir, num_sanity_val_steps=0,
    )
    return trainer, checkpoint
