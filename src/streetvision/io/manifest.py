"""Phase manifests: the record that a phase finished, and of exactly what it produced.

A phase is done iff its ``manifest.json`` exists. It is written last and atomically, after every
artifact it lists, so it never points at a file that is missing or differs (``verify`` checks).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from streetvision.io.atomic import atomic_write_json
from streetvision.io.hashing import config_hash, file_record, sha256_file

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
TRACKED_PACKAGES = ("python", "torch", "torchvision", "timm", "lightning", "peft", "snakemake", "numpy", "streetvision")


def package_versions() -> dict[str, str | None]:
    """Versions from package metadata: no heavy import is paid for them."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES[1:]:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(repo_dir: str | os.PathLike | None) -> dict[str, Any]:
    """Commit of the workflow checkout and whether its tracked files differ from it."""
    if repo_dir is None:
        return {"commit": None, "dirty": None}

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(repo_dir), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class PhaseRecorder:
    """Collects what a phase consumed and produced, then writes the manifest last.

    Usage::

        rec = PhaseRecorder(out_dir, "data", "demo", cfg, seed=0)
        write(rec.path("index.parquet")); rec.add_artifact("index.parquet")
        rec.metrics["n_samples"] = 123
        rec.finish()
    """

    phase_dir: Path
    phase: str
    experiment: str
    config_section: Any
    seed: int | None = None
    workflow_dir: str | os.PathLike | None = None
    device: str = "cpu"
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    _artifacts: list[str] = field(default_factory=list)
    _consumed: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.phase_dir = Path(self.phase_dir)
        self.phase_dir.mkdir(parents=True, exist_ok=True)
        self._started_wall = _utc_now()
        self._started = time.monotonic()
        # A manifest left from an earlier run must not vouch for artifacts about to be rewritten.
        (self.phase_dir / MANIFEST_NAME).unlink(missing_ok=True)

    def path(self, relative: str) -> Path:
        target = self.phase_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def add_artifact(self, relative: str | os.PathLike) -> None:
        rel = Path(relative)
        if rel.is_absolute():
            rel = Path(os.path.relpath(rel, self.phase_dir))
        if not (self.phase_dir / rel).is_file():
            raise FileNotFoundError(f"artifact {self.phase_dir / rel} was registered but does not exist")
        self._artifacts.append(rel.as_posix())

    def consume(self, manifest_path: str | os.PathLike) -> None:
        manifest_path = Path(manifest_path)
        if not manifest_path.is_file():
            raise FileNotFoundError(f"input manifest {manifest_path} is missing: run its phase first")
        self._consumed.append(manifest_path)

    def finish(self) -> Path:
        artifacts = [file_record(Path(os.path.normpath(self.phase_dir / rel)), self.phase_dir)
                     for rel in sorted(set(self._artifacts))]
        consumed = [
            {"path": os.path.relpath(p.resolve(), self.phase_dir.resolve()), "sha256": sha256_file(p)}
            for p in self._consumed
        ]
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "phase": self.phase,
            "experiment": self.experiment,
            "started_at": self._started_wall,
            "finished_at": _utc_now(),
            "duration_s": round(time.monotonic() - self._started, 3),
            "git": git_state(self.workflow_dir),
            "config_hash": config_hash(self.config_section),
            "config": self.config_section,
            "consumed": consumed,
            "artifacts": artifacts,
            "metrics": self.metrics,
            "seed": self.seed,
            "versions": package_versions(),
            "device": self.device,
            "host": socket.gethostname(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            **self.extra,
        }
        return atomic_write_json(self.phase_dir / MANIFEST_NAME, manifest)


def read_manifest(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    for key in ("schema_version", "phase", "artifacts", "consumed"):
        if key not in manifest:
            raise ValueError(f"{path}: manifest lacks required key '{key}'")
    return manifest


def verify_manifest(path: str | os.PathLike) -> list[str]:
    """Re-hash every artifact and consumed manifest of one manifest; return one line per mismatch."""
    path = Path(path)
    phase_dir = path.parent
    try:
        manifest = read_manifest(path)
    except (OSError, ValueError) as err:
        return [f"{path}: unreadable manifest: {err}"]
    problems = []
    for entry in manifest["artifacts"]:
        target = phase_dir / entry["path"]
        if not target.is_file():
            problems.append(f"{target}: missing (listed in {path})")
            continue
        size = target.stat().st_size
        if size != entry["bytes"]:
            problems.append(f"{target}: size {size} != {entry['bytes']} recorded in {path}")
        elif sha256_file(target) != entry["sha256"]:
            problems.append(f"{target}: SHA-256 differs from {path}")
    for entry in manifest["consumed"]:
        target = (phase_dir / entry["path"]).resolve()
        if not target.is_file():
            problems.append(f"{target}: consumed manifest missing (listed in {path})")
        elif sha256_file(target) != entry["sha256"]:
            problems.append(f"{target}: consumed manifest changed since {path} was written")
    return problems


def find_manifests(root: str | os.PathLike) -> list[Path]:
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(root.rglob(MANIFEST_NAME))


def verify_tree(root: str | os.PathLike) -> tuple[int, list[str]]:
    """Verify every manifest under ``root``; returns (manifests checked, mismatch lines)."""
    manifests = find_manifests(root)
    problems = [line for manifest in manifests for line in verify_manifest(manifest)]
    return len(manifests), problems


def lineage(path: str | os.PathLike, _seen: set | None = None) -> list[dict]:
    """The manifest and, recursively, every manifest it consumed (depth-first, each once)."""
    path = Path(path).resolve()
    seen = _seen if _seen is not None else set()
    if path in seen:
        return []
    seen.add(path)
    manifest = read_manifest(path)
    chain = [{"path": path, "manifest": manifest}]
    for entry in manifest["consumed"]:
        parent = (path.parent / entry["path"]).resolve()
        if parent.is_file():
            chain.extend(lineage(parent, seen))
    return chain
