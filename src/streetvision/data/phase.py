"""The data phase: read the configured source, ingest, split, and write the index + manifest."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from streetvision.data import sources
from streetvision.data.ingest import DescriptionCheck, Ingestor, IngestResult, index_rows
from streetvision.data.splits import check_splits_usable, split_statistics
from streetvision.data.synthetic import generate_dataset
from streetvision.io.atomic import atomic_write_with
from streetvision.io.hashing import config_hash
from streetvision.io.manifest import PhaseRecorder

log = logging.getLogger(__name__)

INDEX_NAME = "index.parquet"
QUARANTINE_NAME = "quarantine.csv"
DUPLICATES_NAME = "duplicates.csv"
SYNTHETIC_CLASSES = {"roadwork": 1, "none": 0}


def _synthetic_samples(data_cfg: dict, data_dir: Path):
    """Scenes are generated once per generator config under ``<results>/_synthetic/<hash>/`` and shared
    by every experiment that asks for the same ones (files are atomic and skipped when present)."""
    syn = data_cfg["synthetic"]
    cache = data_dir.parent.parent / "_synthetic" / config_hash(syn)[:16]
    root = generate_dataset(cache, count=syn["count"], size=syn["image_size"],
                            positive_fraction=syn["positive_fraction"], unlabeled_count=syn["unlabeled_count"],
                            seed=syn["seed"])
    labelled = sources.read_image_folder(root / "labelled", SYNTHETIC_CLASSES)
    unlabeled = sources.read_unlabeled_folder(root / "unlabeled") if syn["unlabeled_count"] else iter(())
    return labelled, unlabeled


def source_samples(data_cfg: dict, data_dir: Path):
    """(labelled samples, unlabeled samples) iterators for the configured source."""
    source = data_cfg["source"]
    if source == "synthetic":
        labelled, unlabeled = _synthetic_samples(data_cfg, data_dir)
    else:
        if data_cfg["path"] is None:
            raise sources.DataSourceError(f"config key 'data.path' is required for data.source '{source}'")
        readers = {
            "image_folder": lambda p: sources.read_image_folder(p, data_cfg["class_map"]),
            "index": sources.read_index_file,
            "natix_parquet": sources.read_natix_parquet,
        }
        labelled, unlabeled = readers[source](data_cfg["path"]), iter(())
    if data_cfg["unlabeled_path"]:
        unlabeled = sources.read_unlabeled_folder(data_cfg["unlabeled_path"])
    return labelled, unlabeled


def ingest(data_cfg: dict, data_dir: Path) -> IngestResult:
    check = None
    if data_cfg["source"] == "natix_parquet" and data_cfg["natix"]["check_scene_description"]:
        check = DescriptionCheck(data_cfg["natix"]["positive_keywords"], data_cfg["natix"]["negative_phrases"])
    ingestor = Ingestor(data_dir / "images", check)
    labelled, unlabeled = source_samples(data_cfg, data_dir)
    ingestor.add_all(labelled)  # labelled first: an unlabeled copy of a labelled image joins its split
    ingestor.add_all(unlabeled)
    return ingestor.finish()


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    atomic_write_with(path, lambda tmp: pd.DataFrame(rows, columns=columns).to_csv(tmp, index=False))


def run_data_phase(data_cfg: dict, out_dir: str | Path, experiment: str, workflow_dir: str | None = None) -> Path:
    """Build ``index.parquet`` (+ quarantine and duplicates lists) and the phase manifest."""
    out_dir = Path(out_dir)
    recorder = PhaseRecorder(out_dir, "data", experiment, data_cfg, seed=data_cfg["seed"], workflow_dir=workflow_dir)
    result = ingest(data_cfg, out_dir)
    rows = index_rows(result, data_cfg["splits"], data_cfg["seed"], out_dir)
    index = pd.DataFrame(rows, columns=["id", "sha256", "label", "split", "path", "origin", "width", "height"])
    index["label"] = index["label"].astype("Int8")
    stats = split_statistics(index["split"], index["label"].astype(object).where(index["label"].notna(), None))
    check_splits_usable(stats)
    hashes_in_two_splits = int(index.groupby("sha256")["split"].nunique().gt(1).sum())
    if hashes_in_two_splits or index["id"].duplicated().any():
        raise AssertionError("leak: a content hash or id appears in two index rows")

    atomic_write_with(recorder.path(INDEX_NAME), lambda tmp: index.to_parquet(tmp, index=False))
    _write_csv(recorder.path(QUARANTINE_NAME), result.quarantine, ["origin", "sha256", "label", "reason", "stored_path"])
    _write_csv(recorder.path(DUPLICATES_NAME), result.duplicates, ["origin", "sha256", "kept_origin"])
    for name in (INDEX_NAME, QUARANTINE_NAME, DUPLICATES_NAME):
        recorder.add_artifact(name)

    reasons: dict[str, int] = {}
    for row in result.quarantine:
        key = row["reason"].split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    recorder.metrics.update({
        "rows_read": result.rows_read,
        "unique_images": len(index),
        "duplicates_merged": len(result.duplicates),
        "quarantined": len(result.quarantine),
        "quarantined_by_reason": reasons,
        "splits": stats,
        "hashes_in_two_splits": hashes_in_two_splits,
    })
    log.info("data: %d rows read, %d unique, %d duplicates merged, %d quarantined",
             result.rows_read, len(index), len(result.duplicates), len(result.quarantine))
    return recorder.finish()


def load_index(data_dir: str | Path) -> pd.DataFrame:
    """The index with ``path`` resolved to absolute paths."""
    data_dir = Path(data_dir)
    index = pd.read_parquet(data_dir / INDEX_NAME)
    index["path"] = [p if Path(p).is_absolute() else str(data_dir / p) for p in index["path"]]
    return index
