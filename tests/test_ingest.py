import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import corrupt_jpeg_bytes, ingest_and_index, jpeg_bytes, run_cli
from PIL import Image

from streetvision import layout
from streetvision.config import load_schema, resolve_experiments
from streetvision.data import challenge as ch
from streetvision.data.sources import DataSourceError
from streetvision.data.splits import SplitError, assign_split
from streetvision.layout import load_index

N = 200  # enough that every split holds both classes


def data_cfg(repo, **overrides):
    """The data section with the schema's defaults and ``overrides`` (one source unless ``sources`` is given)."""
    config = {"demo": True, "experiments": {"demo": {}}, "data": overrides}
    return resolve_experiments(config, load_schema(repo / "config" / "schema.yaml"))["demo"]["data"]


def write_folder(root, n=N, start=0):
    for i in range(start, start + n):
        label = i % 2
        path = root / ("roadwork" if label else "none") / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg_bytes(i))
    return root


# Tests of indexing, dedupe and splits, which no store copy changes, skip making them (a second or two each);
# tests/test_validator_path.py and the shared-store test here cover the copies.
NO_COPIES = "original"


def ingest(repo, tmp_path, **overrides):
    out = tmp_path / "out"
    manifest = json.loads(ingest_and_index(cfg={"data": data_cfg(repo, **overrides)}, out_dir=out,
                                           experiment="t").read_text())
    return manifest, load_index(out), pd.read_csv(out / "quarantine.csv"), pd.read_csv(out / "duplicates.csv")


def test_image_folder_with_corrupt_duplicate_and_conflict(repo, tmp_path):
    root = write_folder(tmp_path / "imgs")
    (root / "none" / "corrupt.jpg").write_bytes(corrupt_jpeg_bytes(1))
    (root / "roadwork" / "copy_of_1.jpg").write_bytes(jpeg_bytes(1))  # same label: merged
    (root / "none" / "copy_of_3.jpg").write_bytes(jpeg_bytes(3))  # 3 is roadwork: conflict
    manifest, index, quarantine, duplicates = ingest(repo, tmp_path, source="image_folder", path=str(root))
    m = manifest["metrics"]
    assert m["rows_read"] == N + 3
    assert m["unique_images"] == N - 1 == len(index)  # image 3 left in quarantine with its copy
    assert m["duplicates_merged"] == 1 and duplicates["origin"].str.endswith("copy_of_1.jpg").all()
    assert m["quarantined"] == 3
    reasons = dict(zip(quarantine["origin"].str.rsplit("/", n=1).str[-1], quarantine["reason"], strict=True))
    assert reasons["corrupt.jpg"].startswith("undecodable")
    assert reasons["copy_of_3.jpg"] == reasons["00003.jpg"] == "duplicate with conflicting labels"
    assert m["quarantined_by_reason"] == {"undecodable": 1, "duplicate with conflicting labels": 2}
    # Nothing lost: every row read is in the index, the duplicates list or quarantine.
    assert len(index) + len(duplicates) + len(quarantine) == m["rows_read"]
    assert index["sha256"].is_unique and m["hashes_in_two_splits"] == 0
    assert set(index["split"]) == {"train", "val_select", "val_calib", "val_conformal", "val_test"}
    assert {"id", "sha256", "label", "split",
            "path"} <= set(pd.read_parquet(tmp_path / "out" / "index.parquet").columns)


def test_index_csv_source_and_bad_label(repo, tmp_path):
    root = write_folder(tmp_path / "imgs")
    rows = [{"path": str(p.relative_to(tmp_path)), "label": int(p.parent.name == "roadwork")}
            for p in sorted(root.rglob("*.jpg"))]
    csv = tmp_path / "index.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    manifest, index, _, _ = ingest(repo, tmp_path, source="index", path=str(csv))
    assert manifest["metrics"]["unique_images"] == N
    assert index.set_index("sha256")["label"].sum() == N // 2
    rows[7]["label"] = 2
    pd.DataFrame(rows).to_csv(csv, index=False)
    with pytest.raises(DataSourceError, match=r"index\.csv row 8: label 2 is not 0 or 1"):
        ingest(repo, tmp_path, source="index", path=str(csv))
    pd.DataFrame({"file": ["a.jpg"], "label": [1]}).to_csv(csv, index=False)
    with pytest.raises(DataSourceError, match=r"missing column\(s\) \['path'\]"):
        ingest(repo, tmp_path, source="index", path=str(csv))


def write_natix_shards(folder, n=N, struct_images=False):
    """NATIX-style shards; descriptions follow the validators' presence rule (roadwork rows have one)."""
    folder.mkdir(parents=True, exist_ok=True)
    half = n // 2
    for shard, rows in enumerate((range(0, half), range(half, n))):
        images = [jpeg_bytes(i) for i in rows]
        column = [{"bytes": b, "path": f"{i}.jpg"} for b, i in zip(images, rows,
                                                                   strict=True)] if struct_images else images
        table = pa.table({
            "image": column,
            "label": [i % 2 for i in rows],
            "scene_description": ["cones and a road work sign" if i % 2 else None for i in rows],
        })
        pq.write_table(table, folder / f"train-{shard:05d}.parquet", row_group_size=32)
    return folder


@pytest.mark.parametrize("struct_images", [False, True])
def test_natix_rows_are_skipped_exactly_as_validators_skip_them(repo, tmp_path, struct_images):
    shards = write_natix_shards(tmp_path / "natix", struct_images=struct_images)
    extra = pa.table({
        "image": [jpeg_bytes(5000), jpeg_bytes(5001), jpeg_bytes(5002), jpeg_bytes(5003),
                  corrupt_jpeg_bytes(7)],
        "label": [0, 1, 1, 0, 1],
        # By presence, not by keywords: "no construction" still counts as a description for label 1.
        "scene_description": ["a quiet street", "", "no construction, empty road", None, "cones"],
    })
    pq.write_table(extra, shards / "train-00002.parquet")
    manifest, index, quarantine, _ = ingest(repo, tmp_path, source="natix_parquet", path=str(shards))
    assert manifest["metrics"]["unique_images"] == N + 2
    reasons = dict(zip(quarantine["origin"].str.rsplit("#").str[-1], quarantine["reason"], strict=True))
    assert reasons["0"].startswith("validator would skip: label 0 with a scene_description")
    assert reasons["1"].startswith("validator would skip: label 1 without a scene_description")
    assert reasons["4"].startswith("undecodable")
    assert manifest["metrics"]["quarantined_by_reason"] == {
        "validator would skip": 2, "undecodable": 1}
    assert quarantine["stored_path"].notna().all()  # quarantined bytes are kept, not lost
    assert all((tmp_path / "out" / p).is_file() for p in index["path"])  # inline bytes -> content store
    assert set(index["domain"]) == {"real"} and set(index["source"]) == {f"natix_parquet:{shards}"}


def test_shards_without_descriptions_lose_label_1_rows_and_mask_centres_mark_the_fallback(repo, tmp_path):
    """Validators read a missing scene_description as None (every label-1 row of that shard is skipped) and
    send a row with any stored mask_center unaugmented at levels 1-3 (tests/test_validator_path.py has the
    literal path)."""
    folder = write_natix_shards(tmp_path / "natix")  # two shards with descriptions: both classes
    (folder / "nested").mkdir()
    pq.write_table(pa.table({
        "image": [jpeg_bytes(9000 + i, 40) for i in range(20)],
        "label": [i % 2 for i in range(20)],
        "mask_center": [[i % 40, 3] if i % 4 == 0 else None for i in range(20)],
    }), folder / "nested" / "b.parquet")
    manifest, index, quarantine, _ = ingest(repo, tmp_path, source="natix_parquet", path=str(folder))
    undescribed = quarantine[quarantine["origin"].str.contains("b.parquet")]
    assert len(undescribed) == 10 and (undescribed["label"] == 1).all()
    assert undescribed["reason"].str.startswith("validator would skip: label 1 in a shard without a "
                                                "scene_description column").all()
    from_b = index[index["origin"].str.contains("b.parquet")]
    assert len(from_b) == 10 and (from_b["label"] == 0).all()  # found in a nested folder, label 0 kept
    assert from_b["level_fallback"].tolist() == [i % 4 == 0 for i in range(0, 20, 2)]
    assert from_b.loc[from_b["level_fallback"], "mask_center"].tolist() == ["[0, 3]", "[4, 3]", "[8, 3]", "[12, 3]",
                                                                            "[16, 3]"]
    assert not index[~index["origin"].str.contains("b.parquet")]["level_fallback"].any()


def test_images_too_small_to_challenge_are_quarantined_and_counted(repo, tmp_path):
    root = write_folder(tmp_path / "imgs")
    for name, size in (("dot.png", (1, 1)), ("line.png", (7, 1))):
        Image.new("RGB", size, (200, 0, 0)).save(root / "none" / name)
    manifest, index, quarantine, _ = ingest(repo, tmp_path, source="image_folder", path=str(root))
    assert len(index) == N and manifest["metrics"]["quarantined_by_reason"] == {"undecodable": 2}
    assert quarantine["reason"].str.contains("smaller than 2x2").all()


def test_several_sources_with_domains_dedupe_across_sources(repo, tmp_path):
    real = write_folder(tmp_path / "real")
    generated = write_folder(tmp_path / "generated", start=N)
    (generated / "none" / "dup.jpg").write_bytes((real / "none" / "00000.jpg").read_bytes())  # in both sources
    sources = [{"source": "image_folder", "path": str(real)},
               {"source": "image_folder", "path": str(generated), "domain": "synthetic", "name": "sdxl"}]
    manifest, index, _, duplicates = ingest(repo, tmp_path, sources=sources, store=NO_COPIES)
    assert len(index) == 2 * N and len(duplicates) == 1  # one image, kept with its first source
    assert index.groupby("domain").size().to_dict() == {"real": N, "synthetic": N}
    assert set(index.loc[index["domain"] == "synthetic", "source"]) == {"sdxl"}
    assert set(index.loc[index["domain"] == "real", "source"]) == {f"image_folder:{real}"}
    alone, _, _, _ = ingest(repo, tmp_path / "alone", source="image_folder", path=str(real), store=NO_COPIES)
    single = pd.read_parquet(tmp_path / "alone" / "out" / "index.parquet").set_index("sha256")["split"]
    both = index.set_index("sha256")["split"]
    assert (both.loc[single.index] == single).all()  # a split is a function of the content hash only
    assert set(manifest["metrics"]["by_domain"]) == {"real", "synthetic"}


def test_two_sources_reading_the_same_data_are_named(repo, tmp_path):
    real = write_folder(tmp_path / "real")
    sources = [{"source": "image_folder", "path": str(real)}, {"source": "image_folder",
                                                               "path": str(real) + "/"}]
    with pytest.raises(DataSourceError,
                       match=r"'data\.sources\[0\]' and 'data\.sources\[1\]' read the same data"):
        ingest(repo, tmp_path, sources=sources)


def test_default_domains():
    from streetvision.data.sources import source_specs

    cfg = {"source": "synthetic", "path": None, "class_map": {"roadwork": 1, "none": 0},
           "synthetic": {"count": 10, "image_size": 32, "positive_fraction": 0.5, "unlabeled_count": 0,
                         "seed": 0, "style": "dashcam"},
           "sources": [{"source": "synthetic"}, {"source": "synthetic", "synthetic": {"style": "generated"}},
                       {"source": "index", "path": "x.csv"}]}
    assert [(s.name, s.domain) for s in source_specs(cfg)] == [
        ("synthetic:dashcam", "real"), ("synthetic:generated", "synthetic"), ("index:x.csv", "real")]


def test_truncated_parquet_shard_is_named(repo, tmp_path):
    shards = write_natix_shards(tmp_path / "natix")
    victim = shards / "train-00001.parquet"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(DataSourceError, match=r"train-00001\.parquet: unreadable parquet shard"):
        ingest(repo, tmp_path, source="natix_parquet", path=str(shards))
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_empty_input_folder_and_unknown_class_are_errors(repo, tmp_path):
    (tmp_path / "empty" / "roadwork").mkdir(parents=True)
    with pytest.raises(DataSourceError, match="no images found"):
        ingest(repo, tmp_path, source="image_folder", path=str(tmp_path / "empty"))
    (tmp_path / "empty" / "cats").mkdir()
    with pytest.raises(DataSourceError, match=r"class folder\(s\) \['cats'\] not in data.class_map"):
        ingest(repo, tmp_path, source="image_folder", path=str(tmp_path / "empty"))


def test_single_class_split_is_an_error_naming_the_split(repo, tmp_path):
    root = tmp_path / "imgs"
    for i in range(40):
        (root / "roadwork").mkdir(parents=True, exist_ok=True)
        (root / "roadwork" / f"{i}.jpg").write_bytes(jpeg_bytes(i))
    (root / "none").mkdir()
    (root / "none" / "x.jpg").write_bytes(jpeg_bytes(999))
    with pytest.raises(SplitError, match=r"split '\w+' is single-class"):
        ingest(repo, tmp_path, source="image_folder", path=str(root))


def test_splits_are_stable_when_the_data_set_grows(repo, tmp_path):
    root = write_folder(tmp_path / "imgs", n=N)
    _, before, _, _ = ingest(repo, tmp_path, source="image_folder", path=str(root), store=NO_COPIES)
    write_folder(root, n=N, start=N)
    _, after, _, _ = ingest(repo, tmp_path, source="image_folder", path=str(root), store=NO_COPIES)
    assert len(after) == 2 * N
    merged = before.merge(after, on="id", suffixes=("_before", "_after"))
    assert len(merged) == N and (merged["split_before"] == merged["split_after"]).all()
    assert assign_split("ab" * 32, data_cfg(repo, source="synthetic")["splits"],
                        seed=0) == assign_split("ab" * 32, data_cfg(repo, source="synthetic")["splits"],
                                                seed=0)


def test_unlabeled_copy_of_a_labelled_image_cannot_leak(repo, tmp_path):
    root = write_folder(tmp_path / "imgs")
    unlabeled = tmp_path / "unlabeled"
    unlabeled.mkdir()
    for i in (0, 1, 10_000, 10_001):
        (unlabeled / f"u{i}.jpg").write_bytes(jpeg_bytes(i))
    manifest, index, _, duplicates = ingest(repo, tmp_path, source="image_folder", path=str(root),
                                            unlabeled_path=str(unlabeled))
    assert manifest["metrics"]["splits"]["unlabeled"]["n"] == 2
    assert index.loc[index["split"] == "unlabeled", "label"].isna().all()
    assert len(duplicates) == 2  # u0 and u1 joined their labelled copies' splits


def test_synthetic_source_is_deterministic(repo, tmp_path):
    cfg = {"count": 150, "image_size": 64, "unlabeled_count": 10}
    first, index, _, _ = ingest(repo, tmp_path, source="synthetic", synthetic=cfg, store=NO_COPIES)
    assert first["metrics"]["splits"]["unlabeled"]["n"] == 10
    assert index["width"].eq(64).all()
    again = ingest_and_index(cfg={"data": data_cfg(repo, source="synthetic", synthetic=cfg, store=NO_COPIES)},
                     out_dir=tmp_path / "again", experiment="t")
    assert pd.read_parquet(again.parent / "index.parquet")["sha256"].tolist() == pd.read_parquet(
        tmp_path / "out" / "index.parquet")["sha256"].tolist()


@pytest.mark.slow
def test_experiments_on_one_data_set_share_one_ingest_and_store(repo, tmp_path):
    shards = write_natix_shards(tmp_path / "natix", 100)
    config = {"demo": True, "data": {"source": "natix_parquet", "path": str(shards)},
              "experiments": {"a": {}, "b": {"train": {"seed": 1}}, "c": {"data": {"seed": 5}}}}
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(config))
    targets = [f"results/{exp}/data/manifest.json" for exp in ("a", "b", "c")]
    done = run_cli("snakemake", "-s", str(repo / "Snakefile"), "-d", str(tmp_path), "--configfile",
                   str(tmp_path / "two.yaml"), "--cores", "2", *targets, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ingests = sorted((tmp_path / "results" / layout.INGEST).iterdir())
    assert len(ingests) == 2  # a and b share one; c splits with another seed, so it is another data set
    shared = pd.read_parquet(tmp_path / "results/a/data/index.parquet")
    assert shared.equals(pd.read_parquet(tmp_path / "results/b/data/index.parquet"))  # the same stored files
    stored = [p for p in (tmp_path / "results" / layout.INGEST).rglob("*") if p.suffix in (".jpg", ".png")]
    level0 = [p for p in stored if p.name.endswith(ch.LEVEL0_SUFFIX)]
    # per data set, once: each image, its validator-cache copy and its level-0 challenge (data.store: reduced_raw;
    # these images are too small for a reduced copy)
    assert len(stored) - len(level0) == 2 * 2 * 100 and len(level0) == 2 * 100
    assert all(p.startswith(f"../../{layout.INGEST}/{ingests[0].name}/") or
               p.startswith(f"../../{layout.INGEST}/{ingests[1].name}/") for p in shared["path"])
    verified = run_cli("streetvision", "verify", str(tmp_path / "results"))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    image = next(p for p in stored if p.parent.parent.parent == ingests[0])
    image.write_bytes(image.read_bytes()[:-1] + b"\0")
    deep = run_cli("streetvision", "verify", "--deep", str(tmp_path / "results"))
    assert deep.returncode != 0 and image.name in deep.stdout + deep.stderr
