"""Readers for every ``data.source``: each yields RawSample records, streaming, one at a time.

A reader raises a clear error (naming the file, column or row) for structural problems such as a
missing column, a label that is not 0/1 or an unreadable parquet shard; per-image problems (bytes
that do not decode, a missing image file) are left to ingest, which quarantines them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from streetvision.errors import StreetvisionError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
PARQUET_BATCH_ROWS = 256


class DataSourceError(StreetvisionError, ValueError):
    """Structural problem with an input; the message names the file/column/row."""


@dataclass
class RawSample:
    origin: str  # where it came from: a file path, or "shard.parquet#row"
    label: int | None  # None for unlabeled images
    data: bytes | None = None  # image bytes when the source holds them inline
    path: Path | None = None  # image file when the source references one
    scene_description: str | None = None

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


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image_folder(root: str | Path, class_map: dict[str, int]) -> Iterator[RawSample]:
    """``root/<class>/**/*.jpg`` with class folder names mapped to labels by ``class_map``."""
    root = Path(root)
    if not root.is_dir():
        raise DataSourceError(f"data.path {root}: not a directory")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    unknown = [p.name for p in folders if p.name not in class_map]
    if unknown:
        raise DataSourceError(f"{root}: class folder(s) {unknown} not in data.class_map {sorted(class_map)}")
    found = 0
    for folder in folders:
        label = _check_label(class_map[folder.name], f"data.class_map.{folder.name}")
        for image in _image_files(folder):
            found += 1
            yield RawSample(origin=str(image), label=label, path=image)
    if found == 0:
        raise DataSourceError(f"{root}: no images found (expected class folders {sorted(class_map)} with images)")


def read_unlabeled_folder(root: str | Path) -> Iterator[RawSample]:
    root = Path(root)
    if not root.is_dir():
        raise DataSourceError(f"data.unlabeled_path {root}: not a directory")
    images = _image_files(root)
    if not images:
        raise DataSourceError(f"data.unlabeled_path {root}: no images found")
    for image in images:
        yield RawSample(origin=str(image), label=None, path=image)


def read_index_file(index_path: str | Path) -> Iterator[RawSample]:
    """A CSV or parquet with ``path,label``; relative paths are relative to the index file."""
    import pandas as pd

    index_path = Path(index_path)
    if not index_path.is_file():
        raise DataSourceError(f"data.path {index_path}: index file not found")
    try:
        table = pd.read_parquet(index_path) if index_path.suffix == ".parquet" else pd.read_csv(index_path)
    except Exception as err:  # pandas raises many types for malformed files
        raise DataSourceError(f"{index_path}: cannot be read as {index_path.suffix or 'CSV'} ({err})") from err
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise DataSourceError(f"{index_path}: missing column(s) {sorted(missing)}; found {list(table.columns)}")
    if table.empty:
        raise DataSourceError(f"{index_path}: no rows")
    for row_number, (path, label) in enumerate(zip(table["path"], table["label"], strict=True), start=1):
        where = f"{index_path} row {row_number}"
        image = Path(str(path))
        if not image.is_absolute():
            image = index_path.parent / image
        yield RawSample(origin=str(image), label=_check_label(label, where), path=image)


def _inline_image_bytes(cell, where: str) -> bytes | None:
    """NATIX ``image`` cells hold raw bytes or a struct ``{bytes, path}``."""
    if isinstance(cell, bytes | bytearray):
        return bytes(cell)
    if isinstance(cell, dict):
        if cell.get("bytes") is not None:
            return bytes(cell["bytes"])
        return None
    raise DataSourceError(f"{where}: 'image' must be bytes or a struct {{bytes, path}}, got {type(cell).__name__}")


def read_natix_parquet(root: str | Path) -> Iterator[RawSample]:
    """Shards ``*.parquet`` (sorted) with columns ``image``, ``label``, optional ``scene_description``.

    Streams row batches so memory stays bounded however large the shards are.
    """
    import pyarrow.parquet as pq

    root = Path(root)
    shards = sorted(root.rglob("*.parquet")) if root.is_dir() else [root]
    if not shards or not shards[0].exists():
        raise DataSourceError(f"data.path {root}: no parquet shards found")
    for shard in shards:
        try:
            parquet = pq.ParquetFile(shard)
        except Exception as err:
            raise DataSourceError(f"{shard}: unreadable parquet shard ({err})") from err
        names = set(parquet.schema_arrow.names)
        missing = {"image", "label"} - names
        if missing:
            raise DataSourceError(f"{shard}: missing column(s) {sorted(missing)}; found {sorted(names)}")
        columns = ["image", "label"] + (["scene_description"] if "scene_description" in names else [])
        row = 0
        try:
            batches = parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns)
            for batch in batches:
                records = batch.to_pydict()
                for i in range(batch.num_rows):
                    where = f"{shard} row {row}"
                    data = _inline_image_bytes(records["image"][i], where)
                    yield RawSample(
                        origin=f"{shard}#{row}",
                        label=_check_label(records["label"][i], where),
                        data=data if data is not None else b"",
                        scene_description=records.get("scene_description", [None] * batch.num_rows)[i],
                    )
                    row += 1
        except DataSourceError:
            raise
        except Exception as err:  # pyarrow raises OSError/ArrowInvalid for truncated data pages
            raise DataSourceError(f"{shard}: unreadable parquet shard at row {row} ({err})") from err


SYNTHETIC_CLASSES = {"roadwork": 1, "none": 0}


def _synthetic_samples(data_cfg: dict, cache_root: Path):
    """Scenes are generated once per generator config under ``<cache_root>/<hash>/`` and shared by every
    experiment that asks for the same ones (files are atomic and skipped when present)."""
    from streetvision.data.synthetic import generate_dataset
    from streetvision.io.hashing import config_hash

    syn = data_cfg["synthetic"]
    root = generate_dataset(Path(cache_root) / config_hash(syn)[:16], count=syn["count"], size=syn["image_size"],
                            positive_fraction=syn["positive_fraction"], unlabeled_count=syn["unlabeled_count"],
                            seed=syn["seed"])
    labelled = read_image_folder(root / "labelled", SYNTHETIC_CLASSES)
    unlabeled = read_unlabeled_folder(root / "unlabeled") if syn["unlabeled_count"] else iter(())
    return labelled, unlabeled


def configured_samples(data_cfg: dict, synthetic_cache: Path) -> tuple[Iterator[RawSample], Iterator[RawSample]]:
    """(labelled samples, unlabeled samples) iterators for the configured source."""
    source = data_cfg["source"]
    if source == "synthetic":
        labelled, unlabeled = _synthetic_samples(data_cfg, synthetic_cache)
    else:
        if data_cfg["path"] is None:
            raise DataSourceError(f"config key 'data.path' is required for data.source '{source}'")
        readers = {
            "image_folder": lambda p: read_image_folder(p, data_cfg["class_map"]),
            "index": read_index_file,
            "natix_parquet": read_natix_parquet,
        }
        labelled, unlabeled = readers[source](data_cfg["path"]), iter(())
    if data_cfg["unlabeled_path"]:
        unlabeled = read_unlabeled_folder(data_cfg["unlabeled_path"])
    return labelled, unlabeled
