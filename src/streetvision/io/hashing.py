"""Content hashing used by manifests, the data index and bundles."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def config_hash(section: Any) -> str:
    """Stable hash of a config section: canonical JSON (sorted keys) of the resolved values."""
    canonical = json.dumps(section, sort_keys=True, separators=(",", ":"), default=str)
    return sha256_bytes(canonical.encode("utf-8"))


def file_record(path: Path, root: Path) -> dict:
    """Artifact entry: path relative to ``root`` (may climb with '..'), SHA-256 and size in bytes."""
    return {
        "path": Path(os.path.relpath(path, root)).as_posix(),
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
    }
