"""Readers for every ``data.source``: each yields RawSample records, streaming, one at a time.

A reader raises a clear error (naming the file, column or row) for structural problems such as a
missing column, a label that is not 0/1 or an unreadable parquet shard; per-image problems (bytes
that do not decode, a missing image file) are left to ingest, which quarantines them.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from streetvision.data.images import display_name, is_text_name
from streetvision.errors import StreetvisionError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
PARQUET_BATCH_ROWS = 256


class DataSourceError(StreetvisionError, ValueError):
    """Structural problem with an input; the message names the file/column/row."""


NO_DESCRIPTION_COLUMN = object()  # a NATIX shard without the column (the validators' rule then cannot apply)


@dataclass
class RawSample:
    origin: str  # where it came from: a file path, or "shard.parquet#row"
    label: int | None  # None for unlabeled images
    data: bytes | None = None  # image bytes when the source holds them inline
    path: Path | None = None  # image file when the source references one
    scene_description: object = NO_DESCRIPTION_COLUMN  # str | None where the source has the column
    mask_center: str | None = None  # a NATIX row's mask_center cell, as text (validators never use it)
    level_fallback: bool = False  # validators send this row unaugmented (level -1) where they draw levels 1-3
    source: str = ""  # the configured source's name (set by ``samples_of``)
    domain: str = ""  # its domain, e.g. real / synthetic (set by ``samples_of``)
    copy_to_store: bool = False  # a file the index cannot name (not UTF-8): ingest stores a copy
    natix_row: bool = False  # a row of the NATIX data set: the validators' row rules apply (ingest)

    def read_bytes(self) -> bytes:
        return self.data if self.data is not None else Path(self.path).read_bytes()


def _check_label(value, where: str) -> int:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise DataSourceError(f"{where}: label is missing")
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise DataSourceError(f"{where}: label {value!r} is not 0 or 1") from None
    if as_float not in (0.0, 1.0):
        raise DataSourceError(f"{where}: label {value!r} is not 0 or 1")
    return int(as_float)


@dataclass
class SkippedFiles:
    """Files of an image folder that are not read as images: counted per reason, with a few examples."""

    counts: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)

    def add(self, path: Path, reason: str) -> None:
        self.counts[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(display_name(path))

    def summary(self) -> dict:
        return {"total": sum(self.counts.values()), "by_reason": dict(self.counts), "examples": self.examples}


def _image_files(folder: Path, skipped: SkippedFiles | None) -> list[Path]:
    """The image files under ``folder`` (by suffix); every other file is counted in ``skipped``."""
    images = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(path)
        elif skipped is not None:
            skipped.add(path, f"unsupported extension {path.suffix.lower() or '(none)'}")
    return images


def _file_sample(image: Path, label: int | None) -> RawSample:
    """A sample read from a file; a name that is not UTF-8 cannot go into the index, so its bytes are copied
    into the store (its origin keeps the name, bytes escaped)."""
    if is_text_name(image):
        return RawSample(origin=str(image), label=label, path=image)
    return RawSample(origin=display_name(image), label=label, path=image, copy_to_store=True)


def read_image_folder(root: str | Path, class_map: dict[str, int],
                      skipped: SkippedFiles | None = None) -> Iterator[RawSample]:
    """``root/<class>/**/*.jpg`` with class folder names mapped to labels by ``class_map``; files that are not
    images, and files outside the class folders, are counted in ``skipped``."""
    root = Path(root)
    if not root.is_dir():
        raise DataSourceError(f"data.path {display_name(root)}: not a directory")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    unknown = [display_name(p.name) for p in folders if p.name not in class_map]
    if unknown:
        raise DataSourceError(f"{display_name(root)}: class folder(s) {unknown} not in data.class_map "
                              f"{sorted(class_map)}")
    for loose in sorted(p for p in root.iterdir() if p.is_file()):
        if skipped is not None:
            skipped.add(loose, "outside the class folders")
    found = 0
    for folder in folders:
        label = _check_label(class_map[folder.name], f"data.class_map.{folder.name}")
        for image in _image_files(folder, skipped):
            found += 1
            yield _file_sample(image, label)
    if found == 0:
        raise DataSourceError(f"{display_name(root)}: no images found (expected class folders "
                              f"{sorted(class_map)} with images)")


def read_unlabeled_folder(root: str | Path, skipped: SkippedFiles | None = None) -> Iterator[RawSample]:
    root = Path(root)
    if not root.is_dir():
        raise DataSourceError(f"data.unlabeled_path {display_name(root)}: not a directory")
    images = _image_files(root, skipped)
    if not images:
        raise DataSourceError(f"data.unlabeled_path {display_name(root)}: no images found")
    for image in images:
        yield _file_sample(image, None)


def _index_rows(index_path: Path) -> list[tuple[Path, object]]:
    """(image path, raw label) per row of an index file; relative paths are relative to the index file."""
    import pandas as pd

    if not index_path.is_file():
        raise DataSourceError(f"data.path {index_path}: index file not found")
    try:
        table = pd.read_parquet(index_path) if index_path.suffix == ".parquet" else pd.read_csv(index_path)
    except Exception as err:  # pandas raises many types for malformed files
        kind = index_path.suffix or "CSV"
        raise DataSourceError(f"{index_path}: cannot be read as {kind} ({err})") from err
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise DataSourceError(f"{index_path}: missing column(s) {sorted(missing)}; found "
                              f"{list(table.columns)}")
    if table.empty:
        raise DataSourceError(f"{index_path}: no rows")
    rows = []
    for path, label in zip(table["path"], table["label"], strict=True):
        image = Path(str(path))
        rows.append((image if image.is_absolute() else index_path.parent / image, label))
    return rows


def read_index_file(index_path: str | Path) -> Iterator[RawSample]:
    """A CSV or parquet with ``path,label``; relative paths are relative to the index file."""
    index_path = Path(index_path)
    for row_number, (image, label) in enumerate(_index_rows(index_path), start=1):
        yield RawSample(origin=str(image), label=_check_label(label, f"{index_path} row {row_number}"),
                        path=image)


SYNTHETIC_CLASSES = {"roadwork": 1, "none": 0}
KINDS = ("synthetic", "natix_parquet", "hf_dataset", "image_folder", "index")


@dataclass(frozen=True)
class SourceSpec:
    """One configured source: what to read, and the name and domain its images carry in the index."""

    kind: str
    name: str
    domain: str
    path: str | None = None
    class_map: dict | None = None
    synthetic: dict | None = None  # the demo generator's options (kind == synthetic)
    where: str = "data"  # the config key it came from, for error messages


def default_domain(kind: str, synthetic: dict | None) -> str:
    """``real``, except the demo generator's ``generated`` style (SDXL-like scenes): ``synthetic``."""
    return "synthetic" if kind == "synthetic" and (synthetic or {}).get("style") == "generated" else "real"


def source_specs(data_cfg: dict) -> list[SourceSpec]:
    """The configured sources: ``data.sources`` when given, else the single-source keys as one source.

    Each entry's omitted options come from the top-level ``data`` keys (``class_map``, ``synthetic``); a
    missing ``domain`` is ``default_domain``; a missing ``name`` is ``<source>:<path or style>``. Two
    sources reading the same data (same path, or the same generator settings) are an error naming both.
    """
    entries = data_cfg.get("sources")
    if entries:
        raw = [(f"data.sources[{i}]", entry) for i, entry in enumerate(entries)]
    else:
        raw = [("data", {"source": data_cfg["source"], "path": data_cfg.get("path")})]
    specs, seen = [], {}
    for where, entry in raw:
        kind = entry["source"]
        synthetic = {**data_cfg["synthetic"],
                     **(entry.get("synthetic") or {})} if kind == "synthetic" else None
        path = entry.get("path")
        if kind != "synthetic" and not path:
            raise DataSourceError(f"config key '{where}.path' is required for source '{kind}'")
        identity = (("synthetic", tuple(sorted(synthetic.items()))) if synthetic
                    else (kind, str(Path(path).resolve())))
        if identity in seen:
            raise DataSourceError(f"config keys '{seen[identity]}' and '{where}' read the same data "
                                  f"({path or 'the same generator settings'}): list each source once")
        seen[identity] = where
        label = path if path else synthetic["style"]
        specs.append(SourceSpec(kind, entry.get("name") or f"{kind}:{label}",
                                entry.get("domain") or default_domain(kind, synthetic), path,
                                entry.get("class_map") or data_cfg["class_map"], synthetic, where))
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise DataSourceError(f"config key 'data.sources': source names must be unique, got {names}")
    return specs


@functools.lru_cache(maxsize=64)
def _files_signature(kind: str, path: str) -> tuple[int, int, str]:
    """(files, bytes, digest of every file's name, size and modification time) of what a source reads."""
    root = Path(path)
    if kind in ("natix_parquet", "hf_dataset"):
        files = sorted(p for pattern in ("*.parquet", "*.arrow", "*.json") for p in root.rglob(pattern)) \
            if root.is_dir() else [root]
    elif kind == "index":
        files = [root, *(Path(p) for p in _index_paths(root))]
    else:  # a folder of images: every file, so a new, removed or replaced one is seen (unsupported ones too)
        files = sorted(p for p in root.rglob("*") if not p.is_dir())
    digest, total, count = hashlib.sha256(), 0, 0
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            digest.update(b"missing:" + os.fsencode(file))
            continue
        count, total = count + 1, total + stat.st_size
        name = os.fsencode(file.relative_to(root) if file.is_relative_to(root) and file != root else file)
        digest.update(name + b"\0" + f"{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return count, total, digest.hexdigest()


def _index_paths(index_path: Path) -> list[str]:
    try:
        return [str(path) for path, _ in _index_rows(index_path)]
    except DataSourceError:
        return []  # the data step itself reports the problem


def source_signature(data_cfg: dict) -> dict:
    """What the data step reads, summarised from the file system without reading any image: per source the
    number of files, their bytes and a digest of their names, sizes and modification times.

    As a rule parameter it re-runs the data step (and everything after it) when images are added, removed
    or replaced under ``data.path`` (or ``data.unlabeled_path``); ``snakemake -n`` then says "Params have
    changed". The demo generator's sources are described by their config alone.
    """
    entries = [(spec.name, spec.kind,
                spec.path) for spec in source_specs(data_cfg) if spec.kind != "synthetic"]
    if data_cfg.get("unlabeled_path"):
        entries.append(("unlabeled", "image_folder", data_cfg["unlabeled_path"]))
    signature = {}
    for name, kind, path in entries:
        files, size, digest = _files_signature(kind, str(Path(path).resolve()))
        signature[name] = {"files": files, "bytes": size, "digest": digest[:16]}
    return signature


def _synthetic_root(spec: SourceSpec, cache_root: Path) -> Path:
    """Scenes are generated once per generator config under ``<cache_root>/<hash>/`` and shared by every
    experiment that asks for the same ones (files are atomic and skipped when present)."""
    from streetvision.data.synthetic import generate_dataset
    from streetvision.io.hashing import config_hash

    syn = spec.synthetic
    return generate_dataset(Path(cache_root) / config_hash(syn)[:16], count=syn["count"],
                            size=syn["image_size"],
                            positive_fraction=syn["positive_fraction"],
                            unlabeled_count=syn["unlabeled_count"], seed=syn["seed"], style=syn["style"])


def samples_of(spec: SourceSpec, synthetic_cache: Path,
               skipped: SkippedFiles | None = None) -> tuple[Iterator[RawSample], Iterator[RawSample]]:
    """(labelled, unlabeled) samples of one source, each tagged with the source's name and domain."""
    unlabeled: Iterator[RawSample] = iter(())
    if spec.kind == "synthetic":
        root = _synthetic_root(spec, synthetic_cache)
        labelled = read_image_folder(root / "labelled", SYNTHETIC_CLASSES)
        if spec.synthetic["unlabeled_count"]:
            unlabeled = read_unlabeled_folder(root / "unlabeled")
    elif spec.kind == "image_folder":
        labelled = read_image_folder(spec.path, spec.class_map, skipped)
    elif spec.kind == "index":
        labelled = read_index_file(spec.path)
    elif spec.kind == "hf_dataset":
        from streetvision.data.natix import read_hf_dataset

        labelled = read_hf_dataset(spec.path)
    else:
        from streetvision.data.natix import read_natix_parquet

        labelled = read_natix_parquet(spec.path)
    return _tagged(labelled, spec), _tagged(unlabeled, spec)


def configured_samples(data_cfg: dict, synthetic_cache: Path,
                       skipped: SkippedFiles | None = None) -> tuple[list, list]:
    """(labelled, unlabeled) sample iterators of every configured source, plus ``data.unlabeled_path``; files
    of the folders that are not images are counted in ``skipped``."""
    labelled, unlabeled = [], []
    for spec in source_specs(data_cfg):
        with_labels, without = samples_of(spec, synthetic_cache, skipped)
        labelled.append(with_labels)
        unlabeled.append(without)
    if data_cfg["unlabeled_path"]:
        extra = SourceSpec("image_folder", "unlabeled", "real", data_cfg["unlabeled_path"])
        unlabeled.append(_tagged(read_unlabeled_folder(extra.path, skipped), extra))
    return labelled, unlabeled


def _tagged(samples: Iterator[RawSample], spec: SourceSpec) -> Iterator[RawSample]:
    for sample in samples:
        sample.source, sample.domain = spec.name, spec.domain
        yield sample
