"""Process environment helpers for the workflow (no Snakemake import)."""

from __future__ import annotations

import os


def prepend_pythonpath(path: str) -> None:
    """Put ``path`` first on PYTHONPATH so that every job started from this process imports from it."""
    current = os.environ.get("PYTHONPATH")
    parts = [path] + [p for p in (current or "").split(os.pathsep) if p and p != path]
    os.environ["PYTHONPATH"] = os.pathsep.join(parts)
