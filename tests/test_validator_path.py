"""What happens to a real image before the challenge, checked against the literal validator path
(tests/natix_reference.py): the cache re-save, the row filter, and the level -1 fallback that every stored
form of ``mask_center`` triggers at levels 1-3."""

import io
import json
from pathlib import Path

import natix_reference as ref
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import ingest_and_index, jpeg_bytes, photo_like_jpeg
from PIL import Image

from streetvision.data import challenge as ch
from streetvision.data.ingest import validator_skip_reason
from streetvision.data.natix import read_natix_parquet
from streetvision.data.views import EvaluationChallenge, Sample, TrainingChallenge, challenge_plan


def png_bytes(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_cache_re_save_is_the_validators_byte_for_byte(tmp_path):
    for seed, data in enumerate([photo_like_jpeg(1, 640, 360, quality=95), jpeg_bytes(2, 48)]):
        folder = tmp_path / f"j{seed}"
        folder.mkdir()
        cached = ref.reference_cache(data, folder)
        assert cached.suffix == ".jpeg" and ch.validator_cache(data) == cached.read_bytes()
        assert ch.validator_cache(data) != data  # one more JPEG generation at quality 75
    folder = tmp_path / "png"
    folder.mkdir()
    data = png_bytes(3)
    cached = ref.reference_cache(data, folder)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(ch.validator_cache(data)))), np.asarray(Image.open(cached)))


# Every way a shard can store mask_center, and pandas' view of it (what the validators' cache reads).
MASK_FORMS = {
    "list column": pa.array([[12, 30], None, [0, 0]], pa.list_(pa.int64())),
    "struct column": pa.array([{"x": 12, "y": 30}, None, {"x": 1, "y": 2}],
                              pa.struct([("x", pa.int64()), ("y", pa.int64())])),
    "string column": pa.array(["[12, 30]", None, "12"], pa.string()),
    "float column": pa.array([12.0, None, 3.5], pa.float64()),
    "all-null column": pa.array([None, None, None], pa.null()),
}


@pytest.mark.parametrize("form", [*MASK_FORMS, "absent"])
def test_the_index_falls_back_exactly_where_the_literal_validator_path_raises(tmp_path, form):
    columns = {"image": [jpeg_bytes(i, 40) for i in range(3)], "label": [1, 0, 1],
               "scene_description": ["cones", None, "a barrier"]}
    if form != "absent":
        columns["mask_center"] = MASK_FORMS[form]
    shard = tmp_path / "train-00000.parquet"
    pq.write_table(pa.table(columns), shard)
    expected = [ref.reference_augmentation_raises(meta.get("mask_center")) for meta in ref.reference_metadata(shard)]
    assert [sample.level_fallback for sample in read_natix_parquet(shard)] == expected
    if form == "list column":
        assert expected == [True, False, True]  # a numpy array's text cannot be unpacked as (x, y)
    if form in ("float column", "struct column"):
        assert all(expected) if form == "float column" else expected == [True, False, True]  # NaN: TypeError


def test_a_shard_without_descriptions_loses_its_label_1_rows_as_on_a_validator(tmp_path):
    shard = tmp_path / "s.parquet"
    pq.write_table(pa.table({"image": [jpeg_bytes(i) for i in range(4)], "label": [0, 1, 0, 1]}), shard)
    metas = ref.reference_metadata(shard)
    for sample, meta in zip(read_natix_parquet(shard), metas, strict=True):
        skip = validator_skip_reason(sample.label, sample.scene_description)
        assert (skip is None) == ref.reference_row_served(sample.label, meta)
        if sample.label == 1:
            assert "shard without a scene_description column" in skip


def test_level_minus_one_sends_the_cached_image_at_full_size_as_the_validator_does(tmp_path):
    data = photo_like_jpeg(4, 500, 300)
    cached = ref.reference_cache(data, tmp_path)
    image, info = ch.simulate_challenge(ch.validator_cache(data), level=-1, rng=0)
    assert info["level"] == -1 and image.size == (500, 300) and info["crop_box"] is None
    assert info["jpeg_bytes"] == ref.reference_fallback_jpeg(cached)
    drawn = [ch.simulate_challenge(cached.read_bytes(), rng=seed, fallback=True)[1]["level"] for seed in range(40)]
    assert set(drawn) == {-1, 0}  # level 0 ignores the mask centre; levels 1-3 raise


def test_views_send_level_minus_one_only_to_rows_that_fall_back(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(ch.validator_cache(photo_like_jpeg(5, 320, 240)))
    falls, plain = Sample(str(path), 7, 320, 240, True), Sample(str(path), 7, 320, 240, False)
    plan = challenge_plan([falls, plain] * 30, seed=3)
    assert set(plan["level"][::2]) <= {-1, 0} and -1 in set(plan["level"][::2])
    assert -1 not in set(plan["level"][1::2])
    assert EvaluationChallenge(3, level=2).image(falls).size == (320, 240)  # a forced level 2 falls back too
    assert EvaluationChallenge(3, level=2).image(plain).size == (224, 224)
    training = TrainingChallenge(lambda image: tuple(image.shape), [0.0, 1.0, 0.0, 0.0], seed=0)
    assert training(falls) == (3, 240, 320) and training(plain) == (3, 224, 224)


def test_an_index_records_the_cache_copy_and_the_fallback(repo, tmp_path):
    from helpers import TINY_CONFIG

    from streetvision.config import load_schema, resolve_experiments
    from streetvision.layout import load_index

    folder = tmp_path / "natix"
    folder.mkdir()
    n = 120
    pq.write_table(pa.table({
        "image": [jpeg_bytes(i, 40) for i in range(n)], "label": [i % 2 for i in range(n)],
        "scene_description": ["cones" if i % 2 else None for i in range(n)],
        "mask_center": pa.array([[3, 4] if i % 4 == 0 else None for i in range(n)], pa.list_(pa.int64()))}),
        folder / "a.parquet")
    config = {**TINY_CONFIG, "data": {"source": "natix_parquet", "path": str(folder)}}
    data_cfg = resolve_experiments(config, load_schema(repo / "config" / "schema.yaml"))["demo"]["data"]
    ingest_and_index(cfg={"data": data_cfg}, out_dir=tmp_path / "results/x/data", experiment="x")
    index = load_index(tmp_path / "results/x/data")
    assert len(index) == n and index["level_fallback"].sum() == n // 4
    assert (index["challenge_path"] != index["path"]).all()  # a real image's challenges start from its cache copy
    first = index.iloc[0]
    assert pd.notna(first["challenge_sha256"]) and first["challenge_sha256"] != first["sha256"]
    assert open(first["challenge_path"], "rb").read() == ch.validator_cache(open(first["path"], "rb").read())


def stored_size(path) -> tuple[int, int]:
    if str(path).endswith(ch.RAW_SUFFIX):
        height, width, _ = ch.load_raw(path).shape
        return width, height
    return Image.open(path).size


@pytest.mark.parametrize("store", ["reduced_raw", pytest.param("reduced", marks=pytest.mark.slow),
                                   pytest.param("original", marks=pytest.mark.slow)])
def test_training_renders_from_the_reduced_store_and_evaluation_from_the_cache_copy(repo, tmp_path, monkeypatch,
                                                                                   store):
    from helpers import TINY_CONFIG

    from streetvision.config import load_schema, resolve_experiments
    from streetvision.data.views import EvaluationChallenge, TrainingChallenge, samples_of
    from streetvision.layout import load_index

    folder = tmp_path / "natix"
    folder.mkdir()
    n = 40  # 1280 x 720 sources: the store keeps every crop at 336 px across (1003 x 564)
    pq.write_table(pa.table({
        "image": [photo_like_jpeg(i, 1280 if i % 3 else 300, 720 if i % 3 else 200) for i in range(n)],
        "label": [i % 2 for i in range(n)], "scene_description": ["cones" if i % 2 else None for i in range(n)]}),
        folder / "a.parquet")
    config = {**TINY_CONFIG, "data": {"source": "natix_parquet", "path": str(folder), "store": store,
                                      "splits": {"train": 0.5, "val_select": 0.1, "val_calib": 0.1,
                                                 "val_conformal": 0.1, "val_test": 0.2}}}
    data_cfg = resolve_experiments(config, load_schema(repo / "config" / "schema.yaml"))["demo"]["data"]
    manifest = ingest_and_index(cfg={"data": data_cfg}, out_dir=tmp_path / "results/x/data", experiment="x")
    index = load_index(tmp_path / "results/x/data")
    large = index["width"] == 1280
    stored = json.loads((tmp_path / "results/x/ingest/manifest.json").read_text())["metrics"]["training_store"]
    copies = 0 if store == "original" else int(large.sum())
    level0s = 0 if store == "original" else n
    assert stored == {"kind": store, "copies": copies,
                      "bytes": int(index.loc[large, "train_bytes"].sum()) if copies else 0,
                      "level0_challenges": level0s,
                      "level0_bytes": int(index["level0_bytes"].sum()) if level0s else 0}
    if store == "original":
        assert (index["train_path"] == index["challenge_path"]).all()
        assert index["level0_path"].isna().all()  # training renders level 0 from the cached original
    else:
        for row in index.itertuples():  # every image, small ones too: the validator's level-0 JPEG
            assert row.level0_path.endswith(ch.LEVEL0_SUFFIX) and row.level0_bytes == Path(row.level0_path).stat().st_size
            assert Path(row.level0_path).read_bytes() == ch.level0_challenge_jpeg(
                Path(row.challenge_path).read_bytes())
        assert (index.loc[~large, "train_path"] == index.loc[~large, "challenge_path"]).all()  # small: as is
        for row in index[large].itertuples():
            assert row.train_path != row.challenge_path
            assert row.train_path.endswith(ch.STORE_SUFFIXES[store]) and stored_size(row.train_path) == (1003, 564)
    opened = []
    real_open = ch._open_source
    monkeypatch.setattr(ch, "_open_source", lambda image: opened.append(image) or real_open(image))
    sample = samples_of(index[large].head(1))[0]
    TrainingChallenge(lambda image: image.size, [0.0, 1.0, 0.0, 0.0], seed=0)(sample)
    EvaluationChallenge(0, lambda image: image.size)(sample)
    row = index[large].iloc[0]
    assert [str(p) for p in opened if isinstance(p, str)] == [row["train_path"], row["challenge_path"]]
    opened.clear()
    level0 = TrainingChallenge(lambda image: image.numpy().transpose(1, 2, 0), [1.0, 0.0, 0.0, 0.0], seed=0)(sample)
    read_for_level0 = [p for p in opened if isinstance(p, str)]
    sent, _ = ch.simulate_challenge(row["challenge_path"], level=0, exact=True)
    if store == "original":  # rendered again from the cached original (the fast path)
        assert np.array_equal(level0, ch.challenge_pixels(row["challenge_path"], level=0))
        assert read_for_level0 == [row["challenge_path"]]
    else:  # decoded from its stored JPEG, nothing else read: the validator's own pixels
        assert np.array_equal(level0, np.array(sent.convert("RGB"))) and read_for_level0 == []
    from streetvision.cli import main as cli

    results = str(manifest.parent.parent.parent)
    assert cli(["verify", "--deep", results]) == 0
    store_files = [row["train_path"]] + ([] if store == "original" else [row["level0_path"]])
    for path in store_files:  # the store is checked too: the copy and the level-0 challenge
        kept = Path(path).read_bytes()
        Path(path).write_bytes(b"x" + kept[1:])
        assert cli(["verify", "--deep", results]) != 0
        Path(path).write_bytes(kept)
    assert cli(["verify", "--deep", results]) == 0


@pytest.mark.slow
def test_an_ingest_from_before_the_level_0_copies_still_trains(repo, tmp_path):
    """A shared ingest written before the stores kept level-0 challenges (no ``level0_*`` columns): the data
    step still indexes it, verify passes, and a drawn level 0 renders from the store copy as it used to."""
    from helpers import TINY_CONFIG

    from streetvision.cli import main as cli
    from streetvision.config import load_schema, resolve_experiments
    from streetvision.data.views import TrainingChallenge, samples_of
    from streetvision.layout import load_index
    from streetvision.phases.data import run_data
    from streetvision.phases.ingest import run_ingest

    folder = tmp_path / "natix"
    folder.mkdir()
    pq.write_table(pa.table({"image": [photo_like_jpeg(i, 1280, 720) for i in range(60)],
                             "label": [i % 2 for i in range(60)],
                             "scene_description": ["cones" if i % 2 else None for i in range(60)]}),
                   folder / "a.parquet")
    config = {**TINY_CONFIG, "data": {"source": "natix_parquet", "path": str(folder),
                                      "splits": {"train": 0.5, "val_select": 0.1, "val_calib": 0.1,
                                                 "val_conformal": 0.1, "val_test": 0.2}}}
    data_cfg = resolve_experiments(config, load_schema(repo / "config" / "schema.yaml"))["demo"]["data"]
    ingest_dir = tmp_path / "results/x/ingest"
    run_ingest(cfg={"data": data_cfg}, out_dir=ingest_dir, experiment="x")
    old_index = pd.read_parquet(ingest_dir / "index.parquet")
    old_index.drop(columns=["level0_path", "level0_sha256", "level0_bytes"]).to_parquet(ingest_dir / "index.parquet")
    run_data(cfg={"data": data_cfg}, ingest_dir=ingest_dir, out_dir=tmp_path / "results/x/data", experiment="x")
    index = load_index(tmp_path / "results/x/data")
    assert index["level0_path"].isna().all() and index["train_path"].str.endswith(ch.RAW_SUFFIX).all()
    sample = samples_of(index.head(1))[0]
    view = TrainingChallenge(lambda image: image.numpy().transpose(1, 2, 0), [1.0, 0.0, 0.0, 0.0], seed=0)
    assert np.array_equal(view(sample), ch.challenge_pixels(sample.train_path, level=0, source_size=(1280, 720)))
    assert cli(["verify", "--deep", str(tmp_path / "results/x/data")]) == 0
