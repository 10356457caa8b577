"""Phase manifests: the record that a phase finished, and of exactly what it produced.

A phase is done iff its ``manifest.json`` exists. It is written last and atomically, after every
artifact it lists, so it never points at a file that is missing or differs (``verify`` checks).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from streetvision.errors import StreetvisionError
from streetvision.io.atomic import (
    TEMP_SUFFIX,
    atomic_save_tensors,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_with,
)
from streetvision.io.hashing import config_hash, file_record, sha256_file
from streetvision.runtime import process_rank

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
TRACKED_PACKAGES = ("python", "torch", "torchvision", "timm", "lightning", "peft", "snakemake", "numpy",
                    "streetvision")


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
            done = subprocess.run(["git", "-C", str(repo_dir), *args], capture_output=True, text=True,
                                  timeout=20)
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


# What the step's runs have written, each file claimed here before it is written. Kept after the manifest:
# Snakemake deletes a job's output (the manifest) before re-running it, and the next run must still know
# which files are its own.
JOURNAL_NAME = ".streetvision-owned.json"


class ForeignFilesError(StreetvisionError):
    """A step's folder holds files the step did not write; nothing was removed."""


class ManifestError(StreetvisionError, ValueError):
    """A manifest that is missing, unreadable or lacks a required key; the message names the file."""


class PhaseRecorder:
    """Writes a phase's artifacts, lists each one as it is written, and writes the manifest last.

    Every ``write_*`` method writes atomically *and* lists the artifact, so a file cannot land in a
    phase folder without being recorded; ``finish`` refuses to vouch for a folder holding any file it
    did not list (apart from the declared ``scratch`` entries: checkpoints, logs, the data phase's image
    store).

    A recorder replaces only what its own step wrote: what earlier runs of it claimed in the journal
    (``JOURNAL_NAME``: every artifact is claimed there before it is written, so a kill mid-step leaves
    nothing unowned), and the artifacts of the folder's previous manifest of this phase. Any other file in
    the folder (a file the user put there, or another step's output under a colliding name) stops the step
    with ``ForeignFilesError`` before anything is removed.

    Usage::

        rec = PhaseRecorder(out_dir, "phase2_thresholds", "demo", cfg,
                            consumes=[baseline_dir / MANIFEST_NAME])
        rec.write_json("thresholds.json", result)
        rec.metrics["threshold"] = 0.42
        rec.finish()
    """

    def __init__(self, phase_dir: str | os.PathLike, phase: str, experiment: str, config_section: Any, *,
                 consumes: Iterable[str | os.PathLike] = (), seed: int | None = None,
                 workflow_dir: str | os.PathLike | None = None, device: str = "cpu",
                 scratch: Iterable[str] = ()):
        self.phase_dir = Path(phase_dir)
        self.phase, self.experiment, self.config_section = phase, experiment, config_section
        self.seed, self.workflow_dir, self.device = seed, workflow_dir, device
        self.scratch = frozenset(scratch)
        self.metrics: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}
        self._artifacts: set[str] = set()
        self._claimed: set[str] = set()
        self._consumed = [self._check_consumed(Path(m)) for m in consumes]
        self._started_wall, self._started = _utc_now(), time.monotonic()
        self.phase_dir.mkdir(parents=True, exist_ok=True)
        if process_rank() == 0:  # DDP ranks > 0 re-run the entry point: they must not clear rank 0's files
            self._clear_previous_run()

    @staticmethod
    def _check_consumed(manifest_path: Path) -> Path:
        if not manifest_path.is_file():
            raise ManifestError(f"input manifest {manifest_path} is missing: run its phase first")
        return manifest_path

    # ------------------------------------------------------------ what this step owns

    def _previously_owned(self) -> set[str]:
        """Paths (relative to the folder; a trailing '/' claims a whole folder) that earlier runs of this
        phase wrote: its last manifest's artifacts and an interrupted run's journal."""
        owned: set[str] = set()
        manifest = self.phase_dir / MANIFEST_NAME
        if manifest.is_file():
            try:
                recorded = json.loads(manifest.read_text(encoding="utf-8"))
                if recorded.get("phase") == self.phase:
                    owned |= {entry["path"] for entry in recorded.get("artifacts", [])}
            except (ValueError, TypeError, KeyError, AttributeError):
                pass  # unreadable: it vouches for nothing, and owns nothing
        journal = self.phase_dir / JOURNAL_NAME
        if journal.is_file():
            try:
                recorded = json.loads(journal.read_text(encoding="utf-8"))
                if recorded.get("phase") == self.phase:
                    owned |= {str(entry) for entry in recorded["claimed"]}
            except (ValueError, TypeError, KeyError, AttributeError):
                pass
        return owned

    def _is_bookkeeping(self, rel: Path) -> bool:
        return (rel.parts[0] in self.scratch or rel.as_posix() in (MANIFEST_NAME, JOURNAL_NAME)
                or rel.name.endswith(TEMP_SUFFIX))

    def _clear_previous_run(self) -> None:
        """Remove what earlier runs of this phase wrote, after checking that nothing else is in the folder: a
        manifest left from an earlier run must not vouch for artifacts about to be rewritten, no file of that
        run may linger unlisted, and no file the step does not own is ever deleted."""
        owned = self._previously_owned()
        folders = tuple(entry for entry in owned if entry.endswith("/"))

        def is_owned(rel: str) -> bool:
            return rel in owned or rel.startswith(folders)

        files = [path for path in self.phase_dir.rglob("*") if path.is_file() or path.is_symlink()]
        relative = [(path, path.relative_to(self.phase_dir)) for path in files]
        foreign = sorted(rel.as_posix() for path, rel in relative
                         if not self._is_bookkeeping(rel) and not is_owned(rel.as_posix()))
        if foreign:
            shown = ", ".join(foreign[:10]) + (f" and {len(foreign) - 10} more" if len(foreign) > 10 else "")
            raise ForeignFilesError(
                f"{self.phase_dir}: holds {len(foreign)} file(s) that step '{self.phase}' did not write "
                f"({shown}); nothing was removed. Move them elsewhere: a step only replaces its own outputs")
        (self.phase_dir / MANIFEST_NAME).unlink(missing_ok=True)
        for entry in owned:  # artifacts listed with '..' (outside the folder) are owned too
            target = self.phase_dir / entry
            if entry.endswith("/"):
                shutil.rmtree(target, ignore_errors=True)
            elif not target.is_dir():
                target.unlink(missing_ok=True)
        for path in sorted(self.phase_dir.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            rel = path.relative_to(self.phase_dir)
            emptied = path.is_dir() and not path.is_symlink() and not any(path.iterdir())
            if emptied and rel.parts[0] not in self.scratch:
                path.rmdir()  # folders emptied above
        atomic_write_json(self.phase_dir / JOURNAL_NAME, {"phase": self.phase, "claimed": []})

    def _claim(self, relative: str) -> None:
        """Record in the journal, before writing, that this step owns ``relative`` (a file, or a folder with
        a trailing '/'), so that a run killed mid-step can be cleaned up by the next one."""
        if relative in self._claimed:
            return
        self._claimed.add(relative)
        atomic_write_json(self.phase_dir / JOURNAL_NAME, {"phase": self.phase,
                                                          "claimed": sorted(self._claimed)})

    # ------------------------------------------------------------ writing = listing

    def path(self, relative: str) -> Path:
        """Where an artifact goes (claimed, parent folders created); prefer the ``write_*`` methods."""
        self._claim(Path(relative).as_posix())
        target = self.phase_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def folder(self, relative: str) -> Path:
        """A folder that a library function fills (e.g. the bundle): claimed as a whole before it is written;
        list its files with ``register_tree`` afterwards."""
        self._claim(Path(relative).as_posix().rstrip("/") + "/")
        target = self.phase_dir / relative
        target.mkdir(parents=True, exist_ok=True)
        return target

    def add_artifact(self, relative: str | os.PathLike) -> Path:
        """List a file already written (e.g. by a library function that needs a plain path)."""
        rel = Path(relative)
        if rel.is_absolute():
            rel = Path(os.path.relpath(rel, self.phase_dir))
        target = self.phase_dir / rel
        if not target.is_file():
            raise FileNotFoundError(f"artifact {target} was registered but does not exist")
        self._claim(rel.as_posix())
        self._artifacts.add(rel.as_posix())
        return target

    def register_tree(self, relative_dir: str) -> list[Path]:
        """List every file under a folder that a library function wrote (e.g. the bundle)."""
        root = self.phase_dir / relative_dir
        files = [path for path in sorted(root.rglob("*")) if path.is_file()]
        return [self.add_artifact(path.relative_to(self.phase_dir)) for path in files]

    def write_with(self, relative: str, write_fn) -> Path:
        """``write_fn(tmp_path)`` writes the complete file (parquet, PNG, ...); atomic, then listed."""
        atomic_write_with(self.path(relative), write_fn)
        return self.add_artifact(relative)

    def write_bytes(self, relative: str, data: bytes) -> Path:
        atomic_write_bytes(self.path(relative), data)
        return self.add_artifact(relative)

    def write_text(self, relative: str, text: str) -> Path:
        return self.write_bytes(relative, text.encode("utf-8"))

    def write_json(self, relative: str, obj: Any) -> Path:
        atomic_write_json(self.path(relative), obj)
        return self.add_artifact(relative)

    def write_parquet(self, relative: str, frame) -> Path:
        return self.write_with(relative, lambda tmp: frame.to_parquet(tmp, index=False))

    def write_csv(self, relative: str, frame, **to_csv_kwargs) -> Path:
        return self.write_with(relative, lambda tmp: frame.to_csv(tmp, index=False, **to_csv_kwargs))

    def write_tensors(self, relative: str, tensors, metadata: dict[str, str] | None = None) -> Path:
        atomic_save_tensors(self.path(relative), tensors, metadata)
        return self.add_artifact(relative)

    def write_figure(self, relative: str, figure) -> Path:
        """A matplotlib figure as PNG (the figure is closed afterwards)."""
        from streetvision.figures import save_figure

        save_figure(figure, self.path(relative))
        return self.add_artifact(relative)

    def copy_file(self, relative: str, source: str | os.PathLike) -> Path:
        return self.write_bytes(relative, Path(source).read_bytes())

    # ------------------------------------------------------------ the manifest

    def _unlisted_files(self) -> list[str]:
        unlisted = []
        for path in self.phase_dir.rglob("*"):
            rel = path.relative_to(self.phase_dir)
            if not path.is_file() or self._is_bookkeeping(rel) or rel.as_posix() in self._artifacts:
                continue
            unlisted.append(rel.as_posix())
        return sorted(unlisted)

    def finish(self) -> Path:
        unlisted = self._unlisted_files()
        if unlisted:
            raise RuntimeError(f"{self.phase_dir}: files written without being listed in the manifest: "
                               f"{unlisted}")
        artifacts = [file_record(Path(os.path.normpath(self.phase_dir / rel)), self.phase_dir)
                     for rel in sorted(self._artifacts)]
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
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path}: must be a JSON object, got {type(manifest).__name__}")
    for key in ("schema_version", "phase", "artifacts", "consumed"):
        if key not in manifest:
            raise ManifestError(f"{path}: manifest lacks required key '{key}'")
    return manifest


MAX_LISTED_PROBLEMS = 20  # per content index: a missing store should not print a line per image


# (path, SHA-256, bytes) column triples a content index may list: the ingested image, the copy challenges
# start from (the validators' cache re-save of a real image), and what training views read (data.store: the
# copy, and the level-0 challenge; a null path where a store has none).
CONTENT_COLUMNS = (("path", "sha256", "bytes"), ("challenge_path", "challenge_sha256", "challenge_bytes"),
                   ("train_path", "train_sha256", "train_bytes"),
                   ("level0_path", "level0_sha256", "level0_bytes"))


def verify_content_index(phase_dir: Path, relative: str, deep: bool) -> list[str]:
    """The images a content index (a parquet with ``path``, ``sha256``, ``bytes``, and optionally the
    ``challenge_*``, ``train_*`` and ``level0_*`` triples) lists: each must exist with its size; with
    ``deep``, its SHA-256 too (reads every byte: about the disk's read speed)."""
    import pyarrow.parquet as pq

    index_path = phase_dir / relative
    try:
        names = set(pq.read_schema(index_path).names)
        triples = [triple for triple in CONTENT_COLUMNS if set(triple) <= names]
        table = pq.read_table(index_path,
                              columns=sorted({c for triple in triples for c in triple})).to_pydict()
    except Exception as err:  # noqa: BLE001 - pyarrow raises many types; the artifact check names the file too
        return [f"{index_path}: cannot list its images ({err})"]
    problems, seen = [], set()
    for path_column, sha_column, size_column in triples:
        for path, sha, size in zip(table[path_column], table[sha_column], table[size_column], strict=True):
            if path_column == "level0_path" and not isinstance(path, str):  # null: data.store original
                continue
            image = Path(path) if Path(path).is_absolute() else phase_dir / path
            if image in seen:
                continue
            seen.add(image)
            if not image.is_file():
                problems.append(f"{image}: missing (listed in {index_path})")
            elif image.stat().st_size != size:
                problems.append(f"{image}: size {image.stat().st_size} != {size} recorded in {index_path}")
            elif deep and sha256_file(image) != sha:
                problems.append(f"{image}: SHA-256 differs from {index_path}")
    if len(problems) > MAX_LISTED_PROBLEMS:
        problems = problems[:MAX_LISTED_PROBLEMS] + [
            f"{index_path}: {len(problems) - MAX_LISTED_PROBLEMS} more image(s) missing or changed"]
    return problems


def verify_manifest(path: str | os.PathLike, deep: bool = False) -> list[str]:
    """Re-hash every artifact and consumed manifest of one manifest; return one line per mismatch.

    A manifest naming a ``content_index`` (the data step's index) also vouches for the images it lists:
    their sizes are checked, and with ``deep`` their SHA-256."""
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
    if manifest.get("content_index") and not problems:
        problems += verify_content_index(phase_dir, manifest["content_index"], deep)
    return problems


def find_manifests(root: str | os.PathLike) -> list[Path]:
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(root.rglob(MANIFEST_NAME))


def verify_tree(root: str | os.PathLike, deep: bool = False) -> tuple[int, list[str]]:
    """Verify every manifest under ``root``; returns (manifests checked, mismatch lines)."""
    manifests = find_manifests(root)
    problems = [line for manifest in manifests for line in verify_manifest(manifest, deep)]
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
