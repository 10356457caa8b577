"""The NATIX data as miners download it: every layout the `datasets` library leaves on disk gives the same
index as the parquet shards it came from (data.source: hf_dataset)."""

import pandas as pd
import pytest
from helpers import ingest_and_index, write_natix_shards

from streetvision.config import load_schema, resolve_experiments
from streetvision.layout import load_index

COLUMNS = ["sha256", "label", "split", "level_fallback", "challenge_sha256"]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """The same rows as parquet shards, a save_to_disk folder (a DatasetDict), the load_dataset Arrow cache and
    an `hf download`-style snapshot with nested shards, all written by `datasets` itself, offline."""
    import datasets
    root = tmp_path_factory.mktemp("hf")
    shards = write_natix_shards(root / "parquet", 120, size=40, shards=2)
    files = sorted(str(p) for p in shards.glob("*.parquet"))
    loaded = datasets.load_dataset("parquet", data_files={"train": files[:1], "test": files[1:]},
                                   cache_dir=str(root / "hf_cache"))
    loaded.save_to_disk(str(root / "saved"))
    (root / "snapshot" / "data").mkdir(parents=True)
    for split, table in loaded.items():
        table.to_parquet(str(root / "snapshot" / "data" / f"{split}-00000-of-00001.parquet"))
    cache = next((root / "hf_cache").glob("parquet/*"))  # <cache>/<builder>/<config>: one data set's folder
    return {"parquet": shards, "saved": root / "saved", "cache": cache, "snapshot": root / "snapshot"}


def ingest(repo, tmp_path, source, path):
    config = {"demo": True, "experiments": {"x": {}}, "data": {"source": source, "path": str(path)}}
    data_cfg = resolve_experiments(config, load_schema(repo / "config" / "schema.yaml"))["x"]["data"]
    out = tmp_path / source / "results" / "x" / "data"
    ingest_and_index(cfg={"data": data_cfg}, out_dir=out, experiment="x")
    return load_index(out).sort_values("sha256").reset_index(drop=True)


@pytest.mark.parametrize("layout", ["saved", "cache", "snapshot"])
def test_every_datasets_layout_gives_the_rows_of_the_parquet_shards(repo, tmp_path, layouts, layout, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    expected = ingest(repo, tmp_path / "reference", "natix_parquet", layouts["parquet"])
    found = ingest(repo, tmp_path, "hf_dataset", layouts[layout])
    assert len(found) == 120
    pd.testing.assert_frame_equal(found[COLUMNS], expected[COLUMNS])


def test_the_snapshot_layout_also_reads_as_natix_parquet_found_in_nested_folders(repo, tmp_path, layouts):
    expected = ingest(repo, tmp_path / "reference", "natix_parquet", layouts["parquet"])
    found = ingest(repo, tmp_path, "natix_parquet", layouts["snapshot"])
    pd.testing.assert_frame_equal(found[COLUMNS], expected[COLUMNS])
