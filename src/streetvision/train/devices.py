"""Give each training job its own GPU(s), decided before anything in the process initialises CUDA.

Snakemake's ``--resources gpu=2`` only caps how many GPU jobs run at once; every job still sees every
GPU. So a training job, before its first ``torch.cuda`` call, takes its share of the GPUs it may use
(the pool): it counts them without CUDA (``nvidia-smi``), takes an exclusive ``flock`` on one lock file
per device, and sets ``CUDA_VISIBLE_DEVICES`` to the devices it locked. The lease is kept for the rest
of the process's life; the kernel drops the locks when the process exits, however it exits.

Why first: once CUDA is initialised in a process (``torch.cuda.is_available()``, ``device_count()``, a
tensor on a GPU), a later change of ``CUDA_VISIBLE_DEVICES`` has no effect and every job uses device 0.

A ``CUDA_VISIBLE_DEVICES`` that is already set is the pool. When it lists exactly the devices the job
needs, it is a scheduler's allocation (SLURM) and is used as is, locking nothing; when it lists more (a
user restricting the machine's GPUs), the job locks its share among them as above.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from streetvision.errors import StreetvisionError

log = logging.getLogger(__name__)

LOCK_DIR_VARIABLE = "STREETVISION_GPU_LOCK_DIR"
DEFAULT_LOCK_DIR = Path(tempfile.gettempdir()) / "streetvision-gpu-locks"
VISIBLE = "CUDA_VISIBLE_DEVICES"


class DeviceError(StreetvisionError, RuntimeError):
    """A job asks for more GPUs than it can see, or its GPU locks cannot be taken."""


@dataclass
class DeviceLease:
    """The GPUs this process may use (their ids as ``CUDA_VISIBLE_DEVICES`` names them)."""

    devices: tuple[str, ...] = ()
    preassigned: bool = False  # a scheduler's allocation, used as is
    lock_dir: Path | None = None
    _handles: list = field(default_factory=list, repr=False)

    def release(self) -> None:
        for handle in self._handles:
            handle.close()  # closing the only descriptor drops its flock
        self._handles = []


_HELD: list[DeviceLease] = []  # every lease this process took: kept (and locked) until it exits


def physical_gpu_count() -> int:
    """The machine's GPUs, counted by ``nvidia-smi`` (NVML), which never initialises CUDA in this process.

    0 when there is no NVIDIA driver (no ``nvidia-smi``) or it fails.
    """
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return 0
    try:
        listed = subprocess.run([executable, "--query-gpu=index", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("nvidia-smi failed (%s): counting no GPU", err)
        return 0
    return sum(1 for line in listed.splitlines() if line.strip())


def gpu_pool(environ=os.environ) -> tuple[list[str], bool]:
    """(device ids this process may choose from, whether they came from ``CUDA_VISIBLE_DEVICES``)."""
    preset = environ.get(VISIBLE)
    if preset is not None:
        return [d.strip() for d in preset.split(",") if d.strip()], True
    return [str(i) for i in range(physical_gpu_count())], False


def cpu_fallback_reason(rule: str, gpus: int, lease: DeviceLease) -> str:
    import torch

    if not lease.devices:
        return f"rule {rule} asks for gpu={gpus} but no GPU is visible (nvidia-smi lists none)"
    build = "a CPU-only PyTorch build" if torch.version.cuda is None else "no usable CUDA driver"
    return (f"rule {rule} holds GPU(s) {','.join(lease.devices)} but PyTorch cannot use CUDA "
            f"({build}; torch.cuda.is_available() is False)")


def job_device(rule: str) -> str:
    """The torch device of a one-GPU job that is not a Lightning trainer (the synthesize shards): its GPU
    is leased first, as for training; CPU, with a warning naming why, when there is none it can use."""
    import torch

    lease = lease_gpus(1, rule=rule)
    if lease.devices and torch.cuda.is_available():
        return "cuda"
    log.warning("%s: running on CPU", cpu_fallback_reason(rule, 1, lease))
    return "cpu"


def lock_dir_from_env(environ=os.environ) -> Path:
    return Path(environ.get(LOCK_DIR_VARIABLE) or DEFAULT_LOCK_DIR)


def lease_gpus(count: int, *, rule: str, lock_dir: Path | None = None, timeout_s: float = 24 * 3600,
               poll_s: float = 2.0, environ=os.environ) -> DeviceLease:
    """Take ``count`` GPUs for this process and set ``CUDA_VISIBLE_DEVICES`` to them. Call it before any
    ``torch.cuda`` call. An empty lease means there is no GPU: the caller trains on CPU.

    Raises ``DeviceError`` (naming ``rule``) when fewer than ``count`` GPUs are visible, or when the lock
    directory is not usable; waits (polling) while other jobs hold the devices, up to ``timeout_s``.
    """
    if count <= 0:
        return DeviceLease()
    pool, preset = gpu_pool(environ)
    if not pool:
        return DeviceLease()
    where = f"{VISIBLE}={environ[VISIBLE]}" if preset else "this machine"
    if len(pool) < count:
        raise DeviceError(f"rule {rule} asks for gpu={count} but {where} has {len(pool)} visible GPU(s); "
                          f"lower its gpu resource or run it where {count} GPUs are visible")
    if preset and len(pool) == count:
        log.info("%s set by the scheduler: using it as is", where)
        lease = DeviceLease(tuple(pool), preassigned=True)
    else:
        lease = _lock_devices(pool, count, lock_dir or lock_dir_from_env(environ), timeout_s, poll_s)
        environ[VISIBLE] = ",".join(lease.devices)
        log.info("locked GPU(s) %s in %s: %s=%s", ",".join(lease.devices), lease.lock_dir, VISIBLE,
                 environ[VISIBLE])
    _HELD.append(lease)
    return lease


def _lock_devices(pool: list[str], count: int, lock_dir: Path, timeout_s: float,
                  poll_s: float) -> DeviceLease:
    _prepare_lock_dir(lock_dir)
    deadline = time.monotonic() + timeout_s
    waited = False
    while True:
        held = []
        for device in pool:
            handle = _try_lock(lock_dir / f"gpu{_safe(device)}.lock")
            if handle is not None:
                held.append((device, handle))
                if len(held) == count:
                    return DeviceLease(tuple(d for d, _ in held), lock_dir=lock_dir,
                                       _handles=[h for _, h in held])
        for _, handle in held:  # not enough free: let go of what we hold, wait, retry
            handle.close()
        if time.monotonic() > deadline:
            raise DeviceError(f"no {count} free GPU(s) among {len(pool)} within {timeout_s:g} s "
                              f"(locks held by other jobs in {lock_dir})")
        if not waited:
            log.info("all %d GPU(s) are locked by other jobs (%s): waiting for %d", len(pool), lock_dir,
                     count)
            waited = True
        time.sleep(poll_s)


def _prepare_lock_dir(lock_dir: Path) -> None:
    """A directory every user can create lock files in (sticky, like /tmp): jobs of different users on one
    machine must see each other's locks."""
    try:
        if not lock_dir.is_dir():
            lock_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(lock_dir, 0o1777)
        probe = lock_dir / f".probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise DeviceError(f"GPU lock directory {lock_dir} is not writable ({err.strerror or err}); "
                          f"set {LOCK_DIR_VARIABLE} to a directory all training jobs on this machine can "
                          "write") from err


def _try_lock(path: Path):
    # flock needs no write access, so a lock file another user created (mode 0644) can still be locked.
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    handle = os.fdopen(fd, "rb")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _safe(device: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", device)
