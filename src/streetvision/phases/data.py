"""Step ``data``: the index every later step reads (``results/<exp>/data/index.parquet``).

It holds the ingest step's real images and, when synthesize is on, the generated ones: domain 'synthetic',
source t2i or i2i, each in its parent's split with its parent's label, and ``parent_sha256`` (null for
images that were not generated here). Paths stay relative to this folder (``../ingest/images/...``), so the
results tree moves as a whole and no image is stored twice.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pandas as pd

from streetvision import layout
from streetvision.data.ingest import INDEX_COLUMNS
from streetvision.data.splits import LeakError, check_splits_usable, split_statistics
from streetvision.domains import GENERATED_DOMAIN
from streetvision.io.hashing import sha256_bytes
from streetvision.io.manifest import read_manifest
from streetvision.logs import log_result
from streetvision.phases import step_recorder

STEP = "data"
COLUMNS = [*INDEX_COLUMNS, "parent_sha256"]
PATH_COLUMNS = ("path", "challenge_path", "train_path", "level0_path")


def _rebased(paths, source_dir: Path, out_dir: Path) -> list[str]:
    """Paths relative to ``source_dir`` re-expressed from ``out_dir``; absolute ones (user data) and nulls
    (no level-0 copy) kept."""
    def rebased(path):
        if not isinstance(path, str) or os.path.isabs(path):
            return path
        return Path(os.path.relpath(os.path.abspath(source_dir / path), os.path.abspath(out_dir))).as_posix()
    return [rebased(path) for path in paths]


def _generated_rows(records: pd.DataFrame, real: pd.DataFrame, synthesize_dir: Path,
                    out_dir: Path) -> pd.DataFrame:
    """Index rows of the generated images, checked against their parents (split, label, real domain)."""
    parents = real.set_index("sha256")
    for row in records.itertuples():
        parent = parents.loc[row.parent_sha256] if row.parent_sha256 in parents.index else None
        matches = (parent is not None and parent["domain"] != GENERATED_DOMAIN
                   and parent["split"] == row.split and int(parent["label"]) == int(row.label))
        if not matches:
            raise LeakError(f"{synthesize_dir / layout.Synthesize.RECORDS}: image {row.number} "
                            f"({row.sha256[:12]}) has no real parent of its split and label in the ingested "
                            f"index (parent {row.parent_sha256[:12]}); re-run the synthesize step")
    paths = _rebased(records["path"], synthesize_dir, out_dir)
    return pd.DataFrame({
        "id": records["sha256"].str[:16], "sha256": records["sha256"], "label": records["label"],
        "split": records["split"], "path": paths, "origin": [f"synthesize:{n}" for n in records["number"]],
        "source": records["task"], "domain": GENERATED_DOMAIN, "width": records["width"],
        "height": records["height"], "bytes": records["bytes"], "challenge_path": paths,
        "challenge_sha256": records["sha256"], "challenge_bytes": records["bytes"], "train_path": paths,
        "train_sha256": records["sha256"], "train_bytes": records["bytes"], "level0_path": None,
        "level0_sha256": None, "level0_bytes": None, "mask_center": None,
        "level_fallback": False, "parent_sha256": records["parent_sha256"],
    })


def _with_training_copies(rows: pd.DataFrame, recorder, out_dir: Path, store: str) -> pd.DataFrame:
    """The generated images' training-store copies (``data.store``; ingest makes the real images' ones),
    written here under ``images/``: the synthesize step keeps the PNGs as validators would send them."""
    if store == "original" or rows.empty:
        return rows
    from streetvision.data.challenge import (
        LEVEL0_SUFFIX,
        STORE_SUFFIXES,
        level0_challenge_jpeg,
        store_copy_bytes,
    )

    rows = rows.copy()
    for i, path in rows["path"].items():
        level0 = level0_challenge_jpeg(out_dir / path)
        sha = sha256_bytes(level0)
        relative = f"{layout.Data.IMAGES}/{sha[:2]}/{sha}{LEVEL0_SUFFIX}"
        recorder.write_bytes(relative, level0)
        rows.loc[i, ["level0_path", "level0_sha256", "level0_bytes"]] = [relative, sha, len(level0)]
        copy = store_copy_bytes(out_dir / path, store)
        if copy is None:  # small enough already: training reads the PNG
            continue
        data, _ = copy
        sha = sha256_bytes(data)
        relative = f"{layout.Data.IMAGES}/{sha[:2]}/{sha}{STORE_SUFFIXES[store]}"
        recorder.write_bytes(relative, data)
        rows.loc[i, ["train_path", "train_sha256", "train_bytes"]] = [relative, sha, len(data)]
    return rows


def run_data(*, cfg: dict, ingest_dir: str | Path, out_dir: str | Path, experiment: str,
             synthesize_dir: str | Path | None = None, workflow_dir: str | None = None) -> Path:
    ingest_dir, out_dir = Path(ingest_dir), Path(out_dir)
    upstream = [ingest_dir] + ([Path(synthesize_dir)] if synthesize_dir else [])
    recorder = step_recorder(STEP, out_dir, experiment, cfg, seed=cfg["data"]["seed"],
                             workflow_dir=workflow_dir, consumes=[layout.manifest_of(d) for d in upstream])
    real = pd.read_parquet(ingest_dir / layout.Data.INDEX)
    for column in PATH_COLUMNS:
        if column in real:  # an ingest made before the level-0 copies has no level0_path: level 0 renders
            real[column] = _rebased(real[column], ingest_dir, out_dir)
    real["parent_sha256"] = None
    parts = [real]
    if synthesize_dir:
        records = pd.read_parquet(Path(synthesize_dir) / layout.Synthesize.RECORDS)
        generated = _generated_rows(records, real, Path(synthesize_dir), out_dir)
        parts.append(_with_training_copies(generated, recorder, out_dir, cfg["data"]["store"]))
    index = pd.concat(parts, ignore_index=True).reindex(columns=COLUMNS)
    index["label"] = index["label"].astype("Int8")
    index["level_fallback"] = index["level_fallback"].astype(bool)
    if index["sha256"].duplicated().any() or index["id"].duplicated().any():
        raise LeakError(f"{out_dir}: a generated image is byte-identical to another index row "
                        f"({index.loc[index['sha256'].duplicated(), 'sha256'].iloc[0][:12]})")
    labels = index["label"].astype(object).where(index["label"].notna(), None)
    stats = split_statistics(index["split"], labels)
    check_splits_usable(stats)

    recorder.extra["content_index"] = layout.Data.INDEX  # `streetvision verify` checks the images it lists
    recorder.write_parquet(layout.Data.INDEX, index)
    for name in (layout.Data.QUARANTINE, layout.Data.DUPLICATES):  # where users look for them
        recorder.copy_file(name, ingest_dir / name)
    ingest_metrics = read_manifest(layout.manifest_of(ingest_dir))["metrics"]
    generated = int((index["parent_sha256"].notna()).sum())
    recorder.metrics.update({
        **{key: ingest_metrics[key] for key in ("rows_read", "duplicates_merged", "quarantined",
                                                "quarantined_by_reason", "unsupported_files")},
        "unique_images": len(index), "real_images": len(real), "generated_images": generated,
        "splits": stats,
        "by_domain": {domain: split_statistics(part["split"], labels[part.index])
                      for domain, part in index.groupby("domain")},
        "sources": index["source"].value_counts().to_dict(),
        "hashes_in_two_splits": 0,  # checked above: one row per content hash
    })
    by_source = Counter(index.loc[index["parent_sha256"].notna(), "source"])
    made = f" + {generated} generated ({', '.join(f'{k} {v}' for k, v in sorted(by_source.items()))})" \
        if generated else ""
    log_result(STEP, experiment, f"{len(real)} ingested images{made} in the index")
    return recorder.finish()
