"""Checkpoints of the training phases: written atomically, read without unpickling, resumed from the newest.

Files (``checkpoints/``, scratch of the phase folder): ``last.ckpt`` at every epoch end and every
``checkpoint_interval_minutes`` within an epoch; ``best.ckpt`` by the monitored metric; ``hpc_ckpt_<n>.ckpt``
when Lightning's SLURM handler gets SIGUSR1 or the process gets SIGTERM (preemption, ``scontrol requeue``,
time limit). A re-run resumes from the newest readable one (by global step); unreadable ones are skipped
with a warning and removed; a changed config or input discards them all (the run key).

Checkpoints are only ever read with ``torch.load(weights_only=True)``: a file planted in ``checkpoints/``
cannot run code. A finished fit records the SHA-256 of the checkpoint the phase exports from; if that file
later differs (truncated, replaced), the phase warns and trains again instead of failing on every rerun.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from streetvision.io.atomic import atomic_write_text, atomic_write_with
from streetvision.io.hashing import sha256_file
from streetvision.layout import Training
from streetvision.runtime import process_rank

log = logging.getLogger(__name__)

CHECKPOINT_DIR, LAST, DONE_MARKER = Training.CHECKPOINTS, Training.LAST, Training.DONE
RUN_KEY = Training.RUN_KEY  # hash of the config + input manifests the checkpoints belong to
HPC_CHECKPOINT = re.compile(r"hpc_ckpt_(\d+)\.ckpt")  # Lightning's name for its SLURM (SIGUSR1) saves


def load_training_state(path: Path, mmap: bool = False) -> dict:
    """A checkpoint's contents, read without unpickling code (tensors, containers and numbers only)."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written atomically, so a kill mid-save never leaves a torn ``last.ckpt`` to resume from,
    and read with ``weights_only=True`` whatever Lightning or the environment would default to."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        atomic_write_with(path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return load_training_state(Path(path))


@dataclass(frozen=True)
class ResumePoint:
    path: Path
    global_step: int


def discard_stale_training(out_dir: Path, run_key: str, wait_s: float = 600.0) -> None:
    """Checkpoints resume only the same run: another config or other inputs start from scratch.

    Rank 0 removes the stale state, then records the run key; ranks > 0 (which may start at the same moment
    under srun) wait for that key, so that they never resume from a checkpoint rank 0 is about to delete.
    """
    key_file = out_dir / RUN_KEY
    if process_rank() != 0:
        deadline = time.monotonic() + wait_s
        while not (key_file.is_file() and key_file.read_text() == run_key):
            if time.monotonic() > deadline:
                raise TimeoutError(f"rank {process_rank()}: rank 0 did not record run key {key_file} in "
                                   f"{wait_s:g} s")
            time.sleep(0.2)
        return
    if key_file.is_file() and key_file.read_text() == run_key:
        return
    (out_dir / DONE_MARKER).unlink(missing_ok=True)
    for stale in (out_dir / CHECKPOINT_DIR, out_dir / Training.LOGS, out_dir / Training.TENSORBOARD,
                  out_dir / Training.WANDB):  # a tracker's files of the discarded run go with it
        shutil.rmtree(stale, ignore_errors=True)
    atomic_write_text(key_file, run_key)


def resume_candidates(checkpoint_dir: Path) -> list[Path]:
    """``last.ckpt`` and Lightning's SLURM saves (``hpc_ckpt_<n>.ckpt``)."""
    if not checkpoint_dir.is_dir():
        return []
    hpc = [p for p in checkpoint_dir.iterdir() if HPC_CHECKPOINT.fullmatch(p.name)]
    return [p for p in [checkpoint_dir / LAST] if p.is_file()] + sorted(hpc)


def checkpoint_step(path: Path) -> int:
    """The global step a training checkpoint was saved at; raises if the file is not one (torn, foreign)."""
    state = load_training_state(path, mmap=True)
    if not isinstance(state, dict) or "state_dict" not in state or "loops" not in state:
        raise ValueError("not a Lightning training checkpoint")
    return int(state.get("global_step", 0))


def newest_checkpoint(checkpoint_dir: Path) -> ResumePoint | None:
    """The newest readable training state (highest global step, then newest file) among ``last.ckpt`` and
    ``hpc_ckpt_*``. An unreadable one is skipped with a warning and removed, so it cannot be picked again."""
    newest, newest_key = None, None
    for path in resume_candidates(checkpoint_dir):
        try:
            step = checkpoint_step(path)
            key = (step, path.stat().st_mtime_ns)
        except FileNotFoundError:  # another rank removed it as unreadable
            continue
        except Exception as err:  # noqa: BLE001 - any failure to read it means: do not resume from it
            if process_rank() == 0:
                log.warning("checkpoint %s is unreadable (%s: %s): skipping and removing it", path,
                            type(err).__name__, err)
                path.unlink(missing_ok=True)
            continue
        if newest_key is None or key > newest_key:
            newest, newest_key = ResumePoint(path, step), key
    return newest


def remove_interrupted_saves(checkpoint_dir: Path) -> None:
    """SLURM-signal checkpoints are only needed to resume an unfinished fit."""
    for path in resume_candidates(checkpoint_dir):
        if path.name != LAST:
            path.unlink(missing_ok=True)


def restored_checkpoint_name(checkpoint: ModelCheckpoint, restore: str) -> str | None:
    """The file the phase exports from after fitting: the best by the monitored metric, or ``last.ckpt``."""
    if restore == "best":
        return Path(checkpoint.best_model_path).name if checkpoint.best_model_path else None
    return LAST


def finished_run(out_dir: Path) -> dict | None:
    """The record of a finished fit, if its checkpoint is still the one it wrote; else None (after a warning,
    with the stale state removed, so that the phase trains again instead of failing on every rerun)."""
    marker = out_dir / DONE_MARKER
    if not marker.is_file():
        return None
    record = json.loads(marker.read_text())
    name, expected = record.get("restore_checkpoint"), record.get("restore_sha256")
    path = out_dir / CHECKPOINT_DIR / (name or LAST)
    actual = sha256_file(path) if path.is_file() else None
    if expected is not None and actual == expected:
        return record
    if process_rank() == 0:
        log.warning("training finished earlier, but %s is %s: training again", path,
                    "missing" if actual is None else "not the file it wrote (truncated or replaced)")
        marker.unlink(missing_ok=True)
        shutil.rmtree(out_dir / CHECKPOINT_DIR, ignore_errors=True)
        shutil.rmtree(out_dir / Training.LOGS, ignore_errors=True)
    return None


def restore_checkpoint(module: L.LightningModule, out_dir: Path, record: dict) -> None:
    """Load the weights of the checkpoint the run record names into ``module``: training may have ended in an
    earlier run, so the final state always comes from disk, never from memory."""
    path = out_dir / CHECKPOINT_DIR / (record.get("restore_checkpoint") or LAST)
    module.load_state_dict(load_training_state(path)["state_dict"])


def next_hpc_path(checkpoint_dir: Path) -> Path:
    numbers = [int(m.group(1)) for p in resume_candidates(checkpoint_dir)
               if (m := HPC_CHECKPOINT.fullmatch(p.name))]
    return checkpoint_dir / f"hpc_ckpt_{max(numbers, default=0) + 1}.ckpt"


class CheckpointOnTerminate(Callback):
    """On SIGTERM (preemption, ``scontrol requeue``, a time limit) Lightning stops at the end of the current
    training batch; save that state, so that the next run resumes from that batch."""

    def __init__(self, checkpoint_dir: Path):
        self.checkpoint_dir = checkpoint_dir

    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, SIGTERMException) and not trainer.validating:
            path = next_hpc_path(self.checkpoint_dir)
            trainer.save_checkpoint(path)
            log.warning("SIGTERM at global step %d: state saved to %s", trainer.global_step, path)


def checkpoint_callbacks(checkpoint_dir: Path, monitor: str | None,
                         interval_minutes: float) -> list[ModelCheckpoint]:
    """``best.ckpt`` by the monitored metric (when there is one; first, as ``fit_resumable`` reports on it),
    ``last.ckpt`` at every epoch end, and ``last.ckpt`` every ``interval_minutes`` within an epoch.

    The epoch-end ``last.ckpt`` has its own callback: ``save_last`` of the best one writes it only in
    epochs that improved the metric. Version counters are off, so no ``last-v1.ckpt`` appears next to
    another callback's ``last.ckpt``.
    """
    def last(**trigger) -> ModelCheckpoint:
        return ModelCheckpoint(dirpath=checkpoint_dir, filename=Path(LAST).stem, save_top_k=1,
                               save_last=False, enable_version_counter=False, **trigger)

    callbacks = [last(every_n_epochs=1)]
    if monitor:
        callbacks.insert(0, ModelCheckpoint(dirpath=checkpoint_dir, filename="best", monitor=monitor,
                                            mode="max",
                                            save_last=False, save_top_k=1, enable_version_counter=False))
    if interval_minutes > 0:
        callbacks.append(last(train_time_interval=timedelta(minutes=interval_minutes)))
    return callbacks
