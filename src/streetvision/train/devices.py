"""Give each concurrent GPU job its own device(s).

Snakemake's ``--resources gpu=2`` only caps how many GPU jobs run at once; every job still sees
every GPU. Each job therefore takes an exclusive ``flock`` on one lock file per device it uses and
restricts itself with ``CUDA_VISIBLE_DEVICES``. A scheduler that already set
``CUDA_VISIBLE_DEVICES`` (SLURM, a user) is respected as is. Locks are released when the process
exits, however it exits (the kernel drops flocks of dead processes).
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_LOCK_DIR = Path(tempfile.gettempdir()) / "streetvision-gpu-locks"


class DeviceLease:
    def __init__(self, devices: list[int], handles: list, preassigned: bool):
        self.devices = devices
        self._handles = handles
        self.preassigned = preassigned

    def release(self) -> None:
        for handle in self._handles:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        self._handles = []


def visible_gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def acquire_gpus(count: int, *, total: int | None = None, lock_dir: Path = DEFAULT_LOCK_DIR,
                 timeout_s: float = 24 * 3600, poll_s: float = 2.0, environ=os.environ) -> DeviceLease:
    """Lock ``count`` free devices among ``total`` and set ``CUDA_VISIBLE_DEVICES`` to them."""
    if count <= 0:
        return DeviceLease([], [], preassigned=False)
    if environ.get("CUDA_VISIBLE_DEVICES"):
        assigned = [int(d) for d in environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip().isdigit()]
        log.info("CUDA_VISIBLE_DEVICES=%s already set (scheduler or user): using it", environ["CUDA_VISIBLE_DEVICES"])
        return DeviceLease(assigned, [], preassigned=True)
    total = visible_gpu_count() if total is None else total
    if count > total:
        raise RuntimeError(f"this job needs {count} GPU(s) but the machine has {total}")
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    while True:
        held = []
        for device in range(total):
            handle = open(lock_dir / f"gpu{device}.lock", "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            held.append((device, handle))
            if len(held) == count:
                devices = [d for d, _ in held]
                environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, devices))
                log.info("locked GPU(s) %s in %s", devices, lock_dir)
                return DeviceLease(devices, [h for _, h in held], preassigned=False)
        for _, handle in held:  # not enough free: release what we hold, wait, retry
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {count} free GPU(s) among {total} within {timeout_s} s (locks in {lock_dir})")
        time.sleep(poll_s)
