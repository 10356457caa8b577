"""Process environment helpers for the workflow (no Snakemake import)."""

from __future__ import annotations

import os


def prepend_pythonpath(path: str) -> None:
    """Put ``path`` first on PYTHONPATH so that every job started from this process imports from it."""
    current = os.environ.get("PYTHONPATH")
    parts = [path] + [p for p in (current or "").split(os.pathsep) if p and p != path]
    os.environ["PYTHONPATH"] = os.pathsep.join(parts)


def process_rank() -> int:
    """This process's global rank in a distributed run (0 when not distributed).

    Read from the environment, as Lightning does, so that it is right before any process group exists:
    ``RANK`` (torchrun), ``LOCAL_RANK`` (Lightning's DDP launcher on one node), ``SLURM_PROCID`` (one task per
    GPU under srun) — Lightning's own order, so both agree on who is rank 0.
    """
    for variable in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        value = os.environ.get(variable)
        if value is not None and value.isdigit():
            return int(value)
    return 0
