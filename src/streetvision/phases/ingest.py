"""Step ``ingest``: read the configured sources (hash, dedupe, quarantine), split, write the real index.

The data step (``phases/data.py``) publishes this index, with the synthesize step's images when that is on,
as ``results/<exp>/data/index.parquet``: the contract every later step reads."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pandas as pd

from streetvision import layout
from streetvision.data.ingest import (
    DUPLICATE_COLUMNS,
    INDEX_COLUMNS,
    QUARANTINE_COLUMNS,
    index_rows,
    ingest_configured,
)
from streetvision.data.splits import LeakError, check_splits_usable, split_statistics
from streetvision.logs import log_result
from streetvision.phases import step_recorder

STEP = "ingest"

log = logging.getLogger(__name__)



def store_summary(index: pd.DataFrame, kind: str) -> dict:
    """How many reduced training copies ingest made and their bytes (data.store: reduced_raw costs about
    1.7 MB per image above ~0.6 MP, stated so that a full disk is no surprise), and the same of the level-0
    challenges the reduced stores keep (about 10-20 kB each)."""
    copied = index["train_path"] != index["challenge_path"]
    level0 = index["level0_path"].notna()
    return {"kind": kind, "copies": int(copied.sum()), "bytes": int(index.loc[copied, "train_bytes"].sum()),
            "level0_challenges": int(level0.sum()),
            "level0_bytes": int(index.loc[level0, "level0_bytes"].sum())}


def run_ingest(*, cfg: dict, out_dir: str | Path, experiment: str, workflow_dir: str | None = None,
               source_signature: dict | None = None) -> Path:
    """Build ``index.parquet`` (+ quarantine and duplicates lists) and the step's manifest.

    ``source_signature`` (the rule's rerun trigger, ``data.sources.source_signature``) is recorded in the
    manifest as what the step read."""
    data_cfg, out_dir = cfg["data"], Path(out_dir)
    recorder = step_recorder(STEP, out_dir, experiment, cfg, seed=data_cfg["seed"], workflow_dir=workflow_dir,
                             scratch=[layout.Data.IMAGES])
    result = ingest_configured(data_cfg, out_dir / layout.Data.IMAGES,
                               out_dir.parent.parent / layout.SYNTHETIC_CACHE)
    index = pd.DataFrame(index_rows(result, data_cfg["splits"], data_cfg["seed"], out_dir),
                         columns=INDEX_COLUMNS)
    index["label"] = index["label"].astype("Int8")
    index["level_fallback"] = index["level_fallback"].astype(bool)
    stats = split_statistics(index["split"], index["label"].astype(object).where(index["label"].notna(),
                                                                                 None))
    check_splits_usable(stats)
    hashes_in_two_splits = int(index.groupby("sha256")["split"].nunique().gt(1).sum())
    if hashes_in_two_splits or index["id"].duplicated().any():
        raise LeakError(f"{out_dir}: a content hash or id appears in two index rows")

    recorder.extra["source_signature"] = source_signature
    recorder.extra["content_index"] = layout.Data.INDEX  # `streetvision verify` checks the images it lists
    recorder.write_parquet(layout.Data.INDEX, index)
    recorder.write_csv(layout.Data.QUARANTINE, pd.DataFrame(result.quarantine, columns=QUARANTINE_COLUMNS))
    recorder.write_csv(layout.Data.DUPLICATES, pd.DataFrame(result.duplicates, columns=DUPLICATE_COLUMNS))
    recorder.metrics.update({
        "rows_read": result.rows_read,
        "unique_images": len(index),
        "duplicates_merged": len(result.duplicates),
        "quarantined": len(result.quarantine),
        "quarantined_by_reason": dict(Counter(row["reason"].split(":")[0] for row in result.quarantine)),
        "splits": stats,
        "by_domain": {domain: split_statistics(part["split"],
                                               part["label"].astype(object).where(part["label"].notna(),
                                                                                  None))
                      for domain, part in index.groupby("domain")},
        "sources": index["source"].value_counts().to_dict(),
        "hashes_in_two_splits": hashes_in_two_splits,
        "unsupported_files": result.unsupported_files.summary(),  # files in the folders that are not images
        "training_store": store_summary(index, cfg["data"]["store"]),
    })
    skipped = result.unsupported_files.summary()["total"]
    counted = f", {skipped} files that are not images counted" if skipped else ""
    store = recorder.metrics["training_store"]
    copies = (f"; training store {store['kind']}: {store['copies']} reduced copies, "
              f"{store['bytes'] / 1e9:.2f} GB") if store["copies"] else ""
    log_result(STEP, experiment, f"{len(index)} unique images from {result.rows_read} rows "
                                 f"({len(result.duplicates)} duplicates merged, {len(result.quarantine)} "
                                 f"quarantined{counted}){copies}")
    return recorder.finish()
