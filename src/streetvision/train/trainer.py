"""Trainer wiring shared by the training phases: devices, CPU threads, the trainer, fitting with resume.

Order at the start of a phase (``start_training_phase``): a SLURM job of N tasks first becomes its N tasks
(``train/slurm.py``); then this process takes its GPUs (``train/devices.py``) before anything queries CUDA;
only then is ``torch.cuda`` asked whether it can use them. Checkpoints and resume: ``train/checkpoints.py``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.profilers import Profiler
from lightning.pytorch.utilities.exceptions import SIGTERMException

from streetvision.io.atomic import atomic_write_json
from streetvision.io.hashing import config_hash, sha256_file
from streetvision.io.manifest import PhaseRecorder, read_manifest
from streetvision.layout import Training
from streetvision.train.batches import batch_size
from streetvision.train.checkpoints import (
    CHECKPOINT_DIR,
    DONE_MARKER,
    LAST,
    AtomicCheckpointIO,
    CheckpointOnTerminate,
    checkpoint_callbacks,
    discard_stale_training,
    finished_run,
    newest_checkpoint,
    remove_interrupted_saves,
    restored_checkpoint_name,
)
from streetvision.train.curves import CurvesLogger
from streetvision.train.devices import DeviceError, cpu_fallback_reason, lease_gpus
from streetvision.train.progress import TrainingProgress
from streetvision.train.slurm import StepTasks, launch_tasks_if_needed, step_tasks
from streetvision.train.tracking import TrackingSettings, run_tags, tracker_loggers, without_observation_keys

log = logging.getLogger(__name__)


def training_devices(gpus: int, cpu_devices: int, rule: str) -> tuple[str, int]:
    """(accelerator, devices per node) for this process. Takes the job's GPUs *before* the first
    ``torch.cuda`` call (see ``train/devices.py``); falls back to CPU, with a warning, when the rule asks
    for GPUs that are absent or that PyTorch cannot use. Under SLURM tasks, their layout decides."""
    lease = lease_gpus(gpus, rule=rule)
    if lease.devices and torch.cuda.is_available():
        accelerator, devices = "gpu", gpus
    else:
        if gpus > 0:
            log.warning("%s: training on CPU", cpu_fallback_reason(rule, gpus, lease))
        accelerator, devices = "cpu", cpu_devices
    tasks = step_tasks()
    return (accelerator, devices) if tasks is None else (accelerator, slurm_devices(accelerator, devices,
                                                                                    tasks, rule))


def slurm_devices(accelerator: str, devices: int, tasks: StepTasks, rule: str) -> int:
    """Devices per node when this process is one of a SLURM step's tasks: one task per device."""
    if accelerator == "gpu":
        if tasks.per_node != devices:
            raise DeviceError(f"rule {rule} asks for gpu={devices} but its SLURM job step runs "
                              f"{tasks.per_node} "
                              "task(s) per node: DDP under SLURM needs one task per GPU (keep "
                              f"`tasks_per_gpu: 1` for {rule} in the SLURM profile)")
        visible = torch.cuda.device_count()
        if visible < devices:
            raise DeviceError(f"rule {rule}: each of the {devices} SLURM tasks sees {visible} GPU(s); every "
                              "task must "
                              "see all of its node's GPUs (no per-task GPU binding, e.g. --gpu-bind)")
        return devices
    if devices not in (1, tasks.per_node):
        log.warning("rule %s: %d CPU processes configured, but the SLURM job step runs %d task(s) per node: "
                    "training with %d (request `tasks` for the rule to change it)", rule, devices,
                    tasks.per_node, tasks.per_node)
    return tasks.per_node


def start_training_phase(step: str, out_dir: Path, config_section: dict, *, seed: int, gpus: int,
                         cpu_devices: int, upstream: list[Path], threads: int | None = None,
                         loader_workers: int = 0) -> tuple[str, int]:
    """Common start of a training step (``step`` is its rule): SLURM tasks, devices (GPU lease first), CPU
    threads, seed, and checkpoints of another config or input discarded. Returns (accelerator, devices); the
    runner then opens its recorder (``device=f"{accelerator}x{devices}"``, ``scratch=Training.SCRATCH``)."""
    launch_tasks_if_needed(step)  # a SLURM job of N tasks: this process becomes srun (never returns)
    accelerator, devices = training_devices(gpus, cpu_devices, step)
    share_cpu_threads(threads, loader_workers, processes=devices if accelerator == "cpu" else 1)
    L.seed_everything(seed, workers=True, verbose=False)
    trained = {key: without_observation_keys(value) if isinstance(value, dict) else value
               for key, value in config_section.items()}  # a new tracker or interval resumes the same run
    discard_stale_training(out_dir, config_hash([trained, *map(manifest_content, upstream)]))
    return accelerator, devices


def manifest_content(manifest_path: Path) -> list[list[str]]:
    """What an upstream phase made: its artifacts' paths and SHA-256s. Not the manifest's own bytes, which
    also hold times and trackers: an upstream step re-run with another logger made the same artifacts, and
    must not restart this training."""
    return sorted([entry["path"], entry["sha256"]] for entry in read_manifest(manifest_path)["artifacts"])


def training_observers(step: str, experiment: str, cfg: dict, section: str, out_dir: Path,
                       workflow_dir, *, loss: str, score: str | None = None) -> tuple[list, list[Callback]]:
    """What watches a training step configured by ``cfg[section]`` (train or explora): its tracker loggers
    (``train.loggers``, for ``build_trainer(trackers=...)``) and its progress callback."""
    settings = cfg[section]
    trackers = tracker_loggers(TrackingSettings.from_config(settings, section), out_dir,
                               run_tags(experiment, step, cfg, workflow_dir))
    progress = TrainingProgress(f"{step} {experiment}", settings["progress_interval_s"], loss=loss,
                                score=score, score_name="val_select MCC")
    return trackers, [progress]


def loader_workers(configured: int | None, threads: int | None, environ=os.environ) -> int:
    """DataLoader workers: the configured number, else the CPUs the job gets (SLURM's cpus_per_gpu, else
    the rule's ``threads``, else this process's CPU affinity) minus one for the training process."""
    if configured is not None:
        return configured
    cpus = int(environ.get("SLURM_CPUS_PER_GPU") or 0) or threads or len(os.sched_getaffinity(0))
    return max(0, cpus - 1)


def share_cpu_threads(threads: int | None, loader_workers: int, processes: int = 1) -> None:
    """Give torch's intra-op pool the job's CPU threads (the rule's ``threads``) minus its DataLoader workers.

    Left at its default, torch spins one thread per core while the workers also need those cores: on the
    2-core demo that oversubscription made phase 1 1.7x slower than one torch thread beside two workers.
    """
    if not threads:
        return
    torch.set_num_threads(max(1, threads // max(1, processes) - loader_workers))
    log.info("torch uses %d CPU thread(s) beside %d DataLoader worker(s)", torch.get_num_threads(),
             loader_workers)


def compile_problem(accelerator: str, which=shutil.which) -> str | None:
    """Why ``torch.compile`` cannot work here, or None: its default backend (inductor) generates Triton
    kernels on GPU and C++ on CPU, and fails at the first forward, hours into a queue, without them."""
    if accelerator == "gpu":
        from torch.utils._triton import has_triton

        return None if has_triton() else "Triton (torch.compile's GPU code generator) is not installed"
    if os.environ.get("CXX") or which("g++") or which("c++") or which("clang++"):
        return None
    return "no C++ compiler (g++, c++, clang++ or $CXX) is on PATH for torch.compile's CPU backend"


def compile_if_possible(model: torch.nn.Module, enabled: bool, accelerator: str, which=shutil.which) -> bool:
    """``train.compile``: compile the model's forward in place (``nn.Module.compile`` keeps the state-dict
    keys, so checkpoints and the export are unchanged). Returns whether it is compiled; a platform that
    cannot compile gets a warning and trains uncompiled (a speed switch, not a result switch)."""
    if not enabled:
        return False
    problem = compile_problem(accelerator, which)
    if problem:
        log.warning("train.compile is on but %s: training uncompiled", problem)
        return False
    model.compile()
    log.info("model compiled with torch.compile (the first steps include the compilation)")
    return True


def curves_logger(trainer: L.Trainer) -> CurvesLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, CurvesLogger)), None)


def fit_resumable(trainer: L.Trainer, checkpoint: ModelCheckpoint, module: L.LightningModule, out_dir: Path,
                  restore: str = "best", **fit_kwargs) -> dict | None:
    """Fit, resuming from the newest valid checkpoint; skip fitting if a finished run is recorded.

    ``restore`` names the checkpoint the phase exports from (``best`` or ``last``); its SHA-256 goes into the
    run record. Returns the run record (that checkpoint, steps, where it resumed from, throughput) on rank 0,
    None elsewhere.
    """
    finished = finished_run(out_dir)
    if finished is not None:
        log.info("training already complete (%s): skipping to export", out_dir / DONE_MARKER)
        return finished if trainer.global_rank == 0 else None
    resume = newest_checkpoint(out_dir / CHECKPOINT_DIR)
    if resume:
        log.info("resuming from %s at global step %d", resume.path, resume.global_step)
    curves = curves_logger(trainer)
    if curves is not None:
        curves.resume_from(resume.global_step if resume else 0)
    try:
        trainer.fit(module, ckpt_path=resume.path if resume else None, **fit_kwargs)
    except SIGTERMException as stopped:  # Lightning's exit code would be 0: this run did not finish
        raise SystemExit(128 + signal.SIGTERM) from stopped
    if trainer.global_rank != 0:
        return None
    restored = restored_checkpoint_name(checkpoint, restore)
    record = {
        "best_checkpoint": Path(checkpoint.best_model_path).name if checkpoint.best_model_path else None,
        "best_score": float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None,
        "restore_checkpoint": restored,
        "restore_sha256": sha256_file(out_dir / CHECKPOINT_DIR / (restored or LAST)),
        "global_step": trainer.global_step, "epochs": trainer.current_epoch,
        "resumed_from_step": resume.global_step if resume else None,
        "resumed_from": resume.path.name if resume else None,
        "accelerator": trainer.accelerator.__class__.__name__, "devices": trainer.num_devices,
        "world_size": trainer.world_size,
    }
    clock = next((c for c in trainer.callbacks if isinstance(c, TrainingClock)), None)
    if clock is not None:
        record.update(clock.summary(trainer))
    remove_interrupted_saves(out_dir / CHECKPOINT_DIR)
    atomic_write_json(out_dir / DONE_MARKER, record)
    return record


def export_curves(recorder: PhaseRecorder) -> None:
    """Lightning's CSV log becomes the phase's ``curves.csv`` artifact."""
    curves = recorder.phase_dir / Training.LOGS / "metrics.csv"
    if curves.is_file():
        recorder.copy_file(Training.CURVES, curves)


class BatchFetchTimer(Profiler):
    """Lightning's profiler hook around each training-batch fetch: how long the loop blocked on the loader
    (nothing else: checkpoint saves and end-of-step hooks fall outside it)."""

    FETCH = "train_dataloader_next"

    def __init__(self):
        super().__init__()
        self.last, self._since = None, None

    def start(self, action_name: str) -> None:
        if action_name.endswith(self.FETCH):
            self._since = time.perf_counter()

    def stop(self, action_name: str) -> None:
        if action_name.endswith(self.FETCH) and self._since is not None:
            self.last, self._since = time.perf_counter() - self._since, None


class TrainingClock(Callback):
    """Training throughput for the run record: wall time inside training epochs (in-epoch validation
    excluded), samples seen by all ranks, this process's peak GPU memory, and how loader-bound training is.

    Loader-bound: every ``SAMPLE_EVERY``-th step starts from a synchronised end of the step before it (the
    device idle); its wait is the fetch of its batch (``BatchFetchTimer``, the trainer's profiler), its step
    runs from its start to its synchronised end. ``loader_wait_fraction`` is the waits' share of the sampled
    time; 0 means the device never waited. Rank 0's view: under DDP another rank's slow loader shows as
    rank 0's step time (it waits in the all-reduce). Two synchronisations in ``SAMPLE_EVERY`` steps cost next
    to nothing.
    """

    SAMPLE_EVERY = 10

    def __init__(self):
        self.seconds, self.samples, self._since = 0.0, 0, None
        self.waits, self.steps = [], []
        self.fetch_timer = BatchFetchTimer()
        self._sampling = False
        self._step_start = None

    def _start(self):
        self._since = time.perf_counter()

    def _stop(self, trainer):
        if self._since is not None:
            _synchronize(trainer)
            self.seconds += time.perf_counter() - self._since
            self._since = None

    def on_train_epoch_start(self, trainer, pl_module):
        self._start()
        self._sampling, self._step_start = False, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._sampling and self.fetch_timer.last is not None:
            self.waits.append(self.fetch_timer.last)
            self._step_start = time.perf_counter()
        self._sampling = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.samples += batch_size(batch)
        if self._step_start is not None:
            _synchronize(trainer)
            self.steps.append(time.perf_counter() - self._step_start)
            self._step_start = None
        if batch_idx % self.SAMPLE_EVERY == self.SAMPLE_EVERY - 2:  # the next step is sampled
            _synchronize(trainer)
            self._sampling, self.fetch_timer.last = True, None

    def on_validation_start(self, trainer, pl_module):
        self._stop(trainer)
        self._sampling = False

    def on_validation_end(self, trainer, pl_module):
        if trainer.state.fn == "fit":  # validation inside a training epoch: the clock runs on
            self._start()

    def on_train_epoch_end(self, trainer, pl_module):
        self._stop(trainer)

    def summary(self, trainer) -> dict:
        peak = torch.cuda.max_memory_allocated() if trainer.strategy.root_device.type == "cuda" else None
        sampled = min(len(self.waits), len(self.steps))
        waited, stepped = sum(self.waits[:sampled]), sum(self.steps[:sampled])
        return {"train_seconds": self.seconds, "train_samples": self.samples * trainer.world_size,
                "peak_gpu_memory_bytes": peak, "loader_sampled_steps": sampled,
                "loader_wait_fraction": waited / (waited + stepped) if sampled else None,
                "mean_batch_wait_s": waited / sampled if sampled else None,
                "mean_step_s": stepped / sampled if sampled else None}


def _synchronize(trainer) -> None:
    if trainer.strategy.root_device.type == "cuda":
        torch.cuda.synchronize()


def show_progress_bar() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


def build_trainer(phase_dir: Path, *, accelerator: str, devices: int, max_epochs: int, precision: str,
                  monitor: str | None = None, patience: int = 0, trackers=(),
                  max_steps: int = -1, find_unused_parameters: bool = False,
                  checkpoint_interval_minutes: float = 0.0, accumulate_grad_batches: int = 1,
                  gradient_clip_val: float | None = None,
                  extra_callbacks=(), distributed_sampler: bool = True) -> tuple[L.Trainer, ModelCheckpoint]:
    checkpoint_dir = phase_dir / CHECKPOINT_DIR
    checkpoints = checkpoint_callbacks(checkpoint_dir, monitor, checkpoint_interval_minutes)
    clock = TrainingClock()
    callbacks = [*checkpoints, CheckpointOnTerminate(checkpoint_dir), clock, *extra_callbacks]
    if monitor and patience > 0:
        callbacks.append(EarlyStopping(monitor=monitor, mode="max", patience=patience))
    loggers = [CurvesLogger(phase_dir, Training.LOGS), *trackers]  # trackers: training_observers
    tasks = step_tasks()
    num_nodes = tasks.nodes if tasks else 1
    strategy = "auto"
    if devices * num_nodes > 1:
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(find_unused_parameters=find_unused_parameters,
                               process_group_backend="gloo" if accelerator == "cpu" else None)
    plugins = [AtomicCheckpointIO()]
    if "SLURM_NTASKS" in os.environ:  # ranks, world size and rendezvous from SLURM; SIGUSR1 -> save + requeue
        from lightning.pytorch.plugins.environments import SLURMEnvironment

        plugins.append(SLURMEnvironment(auto_requeue=True, requeue_signal=signal.SIGUSR1))
    trainer = L.Trainer(
        accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy, precision=precision,
        max_epochs=max_epochs, max_steps=max_steps, callbacks=callbacks, logger=loggers, plugins=plugins,
        enable_progress_bar=show_progress_bar(), log_every_n_steps=10, enable_model_summary=False,
        default_root_dir=checkpoint_dir,  # where Lightning's SLURM handler writes hpc_ckpt_<n>.ckpt
        num_sanity_val_steps=0, use_distributed_sampler=distributed_sampler,
        profiler=clock.fetch_timer,  # times only the training-batch fetches (TrainingClock)
        accumulate_grad_batches=accumulate_grad_batches, gradient_clip_val=gradient_clip_val,
    )
    return trainer, checkpoints[0]
