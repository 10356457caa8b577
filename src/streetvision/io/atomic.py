"""Crash-safe file writes.

Every write goes to a temp file in the target's directory, is flushed and fsynced, then
``os.replace``-d over the target, and the directory is fsynced so the rename itself is durable.
A process killed at any moment therefore leaves either the old file or the new one, never a torn
file. Temp files left by a killed writer are removed by the next write to the same target; temp
names carry the writer's PID so that a concurrent writer's file in flight is never touched.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".svtmp"


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(target: Path) -> int:
    """Delete temp files that dead writers left for ``target``; returns how many were removed."""
    removed = 0
    if not target.parent.is_dir():
        return 0
    for leftover in target.parent.glob(f".{glob.escape(target.name)}.*{TEMP_SUFFIX}"):
        pid = leftover.name[len(target.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed


def fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically.

    ``durable=False`` skips the fsyncs: still atomic against a killed process, but not against
    power loss. Used for bulk content-addressed image stores where the index is the record.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=TEMP_SUFFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(target.parent)
    return target


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays and paths so that ``json`` can write them; NaN -> None, ±inf -> "inf"."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy scalar or array
        return to_jsonable(value.tolist())
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"  # strict JSON has no infinity; float("inf") reads it back
    return value


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=True, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def atomic_write_with(path: str | os.PathLike, write_fn) -> Path:
    """Atomically produce ``path`` with a writer that needs a real file name (parquet, PNG, ...).

    ``write_fn(tmp_path)`` writes the complete file; it is then fsynced and renamed into place.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=TEMP_SUFFIX, dir=target.parent)
    os.close(fd)
    try:
        write_fn(Path(tmp_name))
        with open(tmp_name, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
    return target


def atomic_save_tensors(path: str | os.PathLike, tensors: Mapping,
                        metadata: Mapping[str, str] | None = None) -> Path:
    """Save a dict of torch tensors as safetensors, atomically."""
    from safetensors.torch import save

    contiguous = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    return atomic_write_bytes(path, save(contiguous, metadata=dict(metadata or {})))
