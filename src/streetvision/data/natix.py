"""Rows of the NATIX roadwork data set, however a miner has it on disk: parquet shards, or a Hugging Face
``datasets`` folder.

Columns: ``image`` (bytes, or a struct ``{bytes, path}`` as a ``datasets`` ``Image`` feature stores it),
``label`` (0/1), optional ``scene_description`` and ``mask_center``. Every row carries the validators' rules
(``RawSample.natix_row``): the description rule and the sampled formats (``ingest.validator_skip_reason``),
and the level -1 fallback of its ``mask_center`` (``validators_fall_back``).

- ``read_natix_parquet``: ``*.parquet`` shards found recursively, e.g. an ``hf download --repo-type dataset``
  snapshot whose shards sit in nested folders (``data/train-00000-of-00009.parquet``);
- ``read_hf_dataset``: a folder ``datasets`` wrote (``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``),
  the Arrow cache ``load_dataset`` leaves (what the subnet's own downloader produces), or a snapshot of
  parquet shards. Every split in it is read (the workflow makes its own content-hash splits).

Both stream row batches, so memory stays bounded however large the data set is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from streetvision.data.sources import (
    NO_DESCRIPTION_COLUMN,
    PARQUET_BATCH_ROWS,
    DataSourceError,
    RawSample,
    _check_label,
)

REQUIRED = ("image", "label")
OPTIONAL = ("scene_description", "mask_center")


def image_bytes(cell, where: str) -> bytes | None:
    """An ``image`` cell: raw bytes, or ``{bytes, path}`` (bytes preferred; else the file at ``path``)."""
    if isinstance(cell, bytes | bytearray):
        return bytes(cell)
    if isinstance(cell, dict):
        if cell.get("bytes") is not None:
            return bytes(cell["bytes"])
        if cell.get("path") and Path(cell["path"]).is_file():
            return Path(cell["path"]).read_bytes()
        return None
    raise DataSourceError(f"{where}: 'image' must be bytes or a struct {{bytes, path}}, got "
                          f"{type(cell).__name__}")


def validators_fall_back(cell, arrow_type) -> bool:
    """Whether a validator's augmentation raises at levels 1-3 on this row's ``mask_center`` (so it sends the
    unaugmented image instead: level -1, ``data.challenge``), as read from the subnet's code.

    Their cache reads a shard with pandas and stores each column in a JSON sidecar (``str(value)`` when JSON
    cannot hold it); the crop then unpacks the value as ``x, y`` and compares the parts with pixel positions.
    No stored form survives that: a list column reaches it as the text of a numpy array, a struct as a dict
    (its keys unpack), a string as a string, a number cannot be unpacked, and a null of a numeric column is
    NaN after pandas. Only a null of any other column (and an absent column) gives None: a plain crop.
    """
    import pyarrow as pa

    if cell is None:
        numeric = (pa.types.is_floating, pa.types.is_integer, pa.types.is_decimal)
        return any(is_type(arrow_type) for is_type in numeric)
    return True


def mask_center_text(cell) -> str | None:
    """The cell as text for the index (what the row held; no longer parsed: validators never use it)."""
    if cell is None:
        return None
    import json

    try:
        return json.dumps(cell)
    except (TypeError, ValueError):
        return str(cell)


def natix_rows(batches: Iterable[dict], schema, label: str) -> Iterator[RawSample]:
    """RawSamples of column batches (``{column: [values]}``) of one table whose arrow ``schema`` has them;
    ``label`` names the table in origins and messages (a shard path, or ``folder[split]``)."""
    names = set(schema.names)
    missing = set(REQUIRED) - names
    if missing:
        raise DataSourceError(f"{label}: missing column(s) {sorted(missing)}; found {sorted(names)}")
    mask_type = schema.field("mask_center").type if "mask_center" in names else None
    row = 0
    for records in batches:
        for i in range(len(records["label"])):
            where = f"{label} row {row}"
            data = image_bytes(records["image"][i], where)
            mask = records["mask_center"][i] if mask_type is not None else None
            yield RawSample(
                origin=f"{label}#{row}", natix_row=True, label=_check_label(records["label"][i], where),
                data=data if data is not None else b"",
                scene_description=records["scene_description"][i] if "scene_description" in records
                else NO_DESCRIPTION_COLUMN,
                mask_center=mask_center_text(mask),
                level_fallback=mask_type is not None and validators_fall_back(mask, mask_type))
            row += 1


def read_natix_parquet(root: str | Path) -> Iterator[RawSample]:
    """Every ``*.parquet`` shard under ``root`` (recursively, sorted), or ``root`` itself when it is one."""
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
        columns = [c for c in (*REQUIRED, *OPTIONAL) if c in parquet.schema_arrow.names]
        batches = (batch.to_pydict() for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS,
                                                                       columns=columns))
        try:
            yield from natix_rows(batches, parquet.schema_arrow, str(shard))
        except DataSourceError:
            raise
        except Exception as err:  # pyarrow raises OSError/ArrowInvalid for truncated data pages
            raise DataSourceError(f"{shard}: unreadable parquet shard ({err})") from err


def _datasets_tables(root: Path):
    """(label, Dataset) of every table ``datasets`` keeps under ``root``: a ``save_to_disk`` folder (one
    dataset, or one per split), else each ``*.arrow`` file of a ``load_dataset`` cache."""
    import datasets

    if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
        loaded = datasets.load_from_disk(str(root))
        splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [("", loaded)]
        return [(f"{root}[{name}]" if name else str(root), table) for name, table in splits]
    arrows = sorted(root.rglob("*.arrow"))
    return [(str(path), datasets.Dataset.from_file(str(path))) for path in arrows]


def read_hf_dataset(root: str | Path) -> Iterator[RawSample]:
    """A Hugging Face ``datasets`` folder (``save_to_disk``, the ``load_dataset`` Arrow cache) or a snapshot
    of parquet shards, read without decoding any image (the ``Image`` feature cast to raw bytes)."""
    import datasets

    root = Path(root)
    if not root.is_dir():
        raise DataSourceError(f"data.path {root}: not a directory")
    try:
        tables = _datasets_tables(root)
    except (OSError, ValueError, FileNotFoundError) as err:
        raise DataSourceError(f"{root}: not a dataset that `datasets` can open ({err})") from err
    if not tables:
        if any(root.rglob("*.parquet")):
            yield from read_natix_parquet(root)
            return
        raise DataSourceError(f"data.path {root}: no datasets folder (dataset_dict.json / state.json), no "
                              "*.arrow cache files and no *.parquet shards")
    for label, table in tables:
        if "image" in table.features and isinstance(table.features["image"], datasets.Image):
            table = table.cast_column("image", datasets.Image(decode=False))
        columns = [c for c in table.column_names if c not in (*REQUIRED, *OPTIONAL)]
        table = table.remove_columns(columns)
        yield from natix_rows(table.iter(batch_size=PARQUET_BATCH_ROWS), table.data.schema, label)
