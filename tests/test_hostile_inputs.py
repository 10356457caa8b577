"""Hostile inputs (issue 19), each made here and handed to the entry point a user runs: ``load_bundle``, the
``streetvision`` CLI, the data step's runner and, in the slow tests, Snakemake itself.

The README's table "Hostile inputs" lists every case and what it gets; each row names the test here.
"""

import io
import json
import os
import struct
import zlib

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import REPO, TINY_CONFIG, ingest_and_index, jpeg_bytes, run_cli
from PIL import Image

from streetvision.bundle import BundleError, load_bundle
from streetvision.config import ConfigError, deep_merge, load_config_file
from streetvision.io.hashing import sha256_bytes

ALICE = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"  # a valid ss58 hotkey


# ------------------------------------------------------------------ files the tests make


def png_bomb(width: int, height: int) -> bytes:
    """A 1-bit PNG that declares width x height pixels in a few hundred bytes (all-zero rows, deflated)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I",
                                                                        zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\0" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    rows = 256  # enough for PIL to open; nothing decodes past the header before the size check
    data = b"".join(packer.compress(row) for _ in range(rows)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def sixteen_bit_grey_png(seed: int) -> tuple[bytes, np.ndarray]:
    """A 16-bit grey PNG (PIL mode I;16) and the 8-bit values it shows."""
    import cv2

    values = np.random.default_rng(seed).integers(0, 65536, (24, 24), dtype=np.uint16)
    ok, encoded = cv2.imencode(".png", values)
    assert ok
    return encoded.tobytes(), np.round(values / 257).astype(np.uint8)


def cli(capsys, *args):
    """``streetvision ARGS`` in this process (the console script's own ``main``): (exit code, stdout, stderr)."""
    from streetvision.cli import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------ a bundle to tamper with (no training)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    from streetvision.bundle.export import write_model_bundle
    from streetvision.models.backbone import data_config
    from streetvision.models.spec import ClassifierSpec

    model_cfg = {**TINY_CONFIG["model"], "head_hidden": 0, "head_dropout": 0.0}
    spec = ClassifierSpec.from_config(model_cfg)
    torch.manual_seed(0)
    model = spec.build()
    spec = ClassifierSpec.from_config(model_cfg, data_config(model.backbone, 224))
    policy = {"type": "threshold", "threshold": 0.4, "temperature": 1.3}
    card = {"model_name": "t", "version": "0.1.0", "submitted_by": "test", "description": "", "notes": ""}
    return write_model_bundle(tmp_path_factory.mktemp("b") / "bundle", model, spec, policy, card)


def copy_bundle(tiny_bundle, tmp_path):
    import shutil

    target = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, target)
    return target


def rewrite(bundle, name: str, content: bytes) -> None:
    """Replace a member *and* its checksum and size in bundle.json: what an attacker who edits both does."""
    (bundle / name).write_bytes(content)
    index = json.loads((bundle / "bundle.json").read_text())
    for entry in index["files"]:
        if entry["path"] == name:
            entry["sha256"], entry["bytes"] = sha256_bytes(content), len(content)
    (bundle / "bundle.json").write_text(json.dumps(index))


def policy_of(bundle) -> dict:
    return json.loads((bundle / "policy.json").read_text())


@pytest.mark.parametrize(("change", "message"), [
    ({"threshold": float("nan")}, r"policy\.json: 'threshold' must be finite, got nan"),
    ({"threshold": 1.5}, r"'threshold' must lie in \[0, 1\], got 1\.5"),
    ({"threshold": "0.4"}, r"'threshold' must be a number, got '0\.4'"),
    ({"temperature": 0}, r"'temperature' must be > 0, got 0"),
    ({"temperature": -2.0}, r"'temperature' must be > 0"),
    ({"temperature": float("inf")}, r"'temperature' must be finite, got inf"),
    ({"type": "scrc", "selection_score": "gate"}, r"'selection_threshold': must be a score in \[0, 1\]"),
    ({"type": "magic"}, r"unknown policy type 'magic'"),
])
def test_a_policy_value_out_of_range_is_refused_on_load(tiny_bundle, tmp_path, change, message):
    bundle = copy_bundle(tiny_bundle, tmp_path)
    text = json.dumps({**policy_of(bundle), **change})  # Python writes NaN / Infinity, as a tamperer could
    rewrite(bundle, "policy.json", text.encode())
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)


def test_predict_on_a_nan_policy_is_one_error_line_and_a_nonzero_exit(tiny_bundle, tmp_path, capsys):
    bundle = copy_bundle(tiny_bundle, tmp_path)
    rewrite(bundle, "policy.json", json.dumps({**policy_of(bundle), "threshold": float("nan")}).encode())
    image = tmp_path / "a.jpg"
    image.write_bytes(jpeg_bytes(0, 64))
    code, out, err = cli(capsys, "predict", "--model", str(bundle), str(image))
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["error: policy.json: 'threshold' must be finite, got nan"]


def test_a_second_policy_file_is_refused(tiny_bundle, tmp_path):
    bundle = copy_bundle(tiny_bundle, tmp_path)
    (bundle / "policy2.json").write_text(json.dumps({**policy_of(bundle), "threshold": 0.9}))
    index = json.loads((bundle / "bundle.json").read_text())
    content = (bundle / "policy2.json").read_bytes()
    index["files"].append({"path": "policy2.json", "role": "policy", "sha256": sha256_bytes(content),
                           "bytes": len(content)})
    (bundle / "bundle.json").write_text(json.dumps(index))
    with pytest.raises(BundleError, match=r"two files with role 'policy' \(policy\.json, policy2\.json\)"):
        load_bundle(bundle)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda index: [entry.pop("bytes") for entry in index["files"]], r"files\[0\] \(.*\) lacks 'bytes'"),
    (lambda index: index.update(files={"a": 1}), r"'files' must be a list of file entries, got dict"),
    (lambda index: index["files"].append("model.safetensors"), r"files\[\d+\] must be an object, got str"),
])
def test_a_malformed_bundle_json_is_named(tiny_bundle, tmp_path, edit, message):
    bundle = copy_bundle(tiny_bundle, tmp_path)
    index = json.loads((bundle / "bundle.json").read_text())
    edit(index)
    (bundle / "bundle.json").write_text(json.dumps(index))
    with pytest.raises(BundleError, match=r"bundle\.json: " + message):
        load_bundle(bundle)


def test_a_bundle_json_that_is_a_list_or_not_utf8_is_named(tiny_bundle, tmp_path, capsys):
    bundle = copy_bundle(tiny_bundle, tmp_path)
    (bundle / "bundle.json").write_text("[1, 2]")
    with pytest.raises(BundleError, match=r"bundle\.json: must be a JSON object, got list"):
        load_bundle(bundle)
    (bundle / "bundle.json").write_bytes(b'{"format": "\xff\xfe"}')
    code, _, err = cli(capsys, "predict", "--model", str(bundle), str(bundle / "README.md"))
    assert code == 2 and "bundle.json: not UTF-8 text" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("record", "message"), [
    (b"{not json", r"model_config\.json: not valid JSON"),
    (b'{"img_size": 224}', r"model_config\.json: missing key 'backbone'"),
    (None,
     r"model_config\.json: config key 'model\.backbone': 'vit_nonexistent_patch16' is not a timm model"),
])
def test_a_malformed_model_record_is_named(tiny_bundle, tmp_path, record, message):
    bundle = copy_bundle(tiny_bundle, tmp_path)
    if record is None:
        good = json.loads((bundle / "model_config.json").read_text())
        record = json.dumps({**good, "backbone": "vit_nonexistent_patch16"}).encode()
    rewrite(bundle, "model_config.json", record)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)


def test_nan_weights_are_refused(tiny_bundle, tmp_path):
    from safetensors.torch import load_file, save

    bundle = copy_bundle(tiny_bundle, tmp_path)
    state = load_file(bundle / "model.safetensors")
    first = next(name for name, tensor in state.items() if tensor.is_floating_point())
    state[first] = torch.full_like(state[first], float("nan"))
    rewrite(bundle, "model.safetensors", save(state))
    with pytest.raises(BundleError, match=r"model\.safetensors: tensor\(s\) .* hold NaN or infinite values"):
        load_bundle(bundle)


def test_predict_reports_a_decompression_bomb_and_goes_on(tiny_bundle, tmp_path, capsys):
    bomb, good = tmp_path / "bomb.png", tmp_path / "good.jpg"
    bomb.write_bytes(png_bomb(30000, 30000))
    good.write_bytes(jpeg_bytes(3, 96))
    assert bomb.stat().st_size < 10_000
    code, out, err = cli(capsys, "predict", "--model", str(tiny_bundle), str(bomb), str(good))
    assert code == 1
    answers = [json.loads(line) for line in out.splitlines()]
    assert [a["path"] for a in answers] == [str(good)] and 0 <= answers[0]["probability"] <= 1
    error = json.loads(err.strip().splitlines()[-1])
    assert error["path"] == str(bomb) and "30000x30000 = 900,000,000 pixels, more than the limit" in error["error"]


def test_a_hugging_face_folder_without_the_roadwork_label_is_named(tmp_path, capsys):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "config.json").write_text(json.dumps({"model_type": "vit", "id2label": {"0": "cat", "1": "dog"}}))
    image = tmp_path / "a.jpg"
    image.write_bytes(jpeg_bytes(0, 64))
    code, _, err = cli(capsys, "predict", "--model", str(repo), str(image))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "config.json: id2label is {'0': 'cat', '1': 'dog'}, without the label 'Roadwork'" in err


# ------------------------------------------------------------------ images through the data step's runner


def test_every_pixel_mode_becomes_what_the_image_shows(tmp_path):
    from streetvision.data.images import read_rgb

    grey16, shown = sixteen_bit_grey_png(0)
    assert Image.open(io.BytesIO(grey16)).mode == "I;16"
    assert np.array_equal(np.asarray(read_rgb(grey16))[..., 0], shown)  # PIL's convert makes it ~all white
    palette = Image.new("P", (8, 8))
    palette.putpalette([200, 10, 10] + [0, 0, 255] * 255)
    palette.paste(1, (0, 0, 4, 8))
    palette.info["transparency"] = 0  # index 0 (the red half) is transparent
    rgb = np.asarray(read_rgb(png_bytes(palette)))
    assert (rgb[:, 4:] == 0).all() and (rgb[:, :4] == [0, 0, 255]).all()  # transparent over black, blue kept
    la = np.asarray(read_rgb(png_bytes(Image.new("LA", (4, 4), (200, 128)))))
    assert (la == 100).all()  # grey 200 at half alpha over black
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))
    buffer = io.BytesIO()
    cmyk.save(buffer, format="JPEG", quality=95)
    red = np.asarray(read_rgb(buffer.getvalue())).reshape(-1, 3).mean(axis=0)
    assert red[0] > 240 and red[1] < 15 and red[2] < 15


def test_hostile_images_are_quarantined_with_a_reason_or_indexed_as_they_look(repo, tmp_path):
    """16-bit, palette, LA and CMYK images, decompression bombs, a non-UTF-8 file name, files that are not images
    and a float image, through the data step's runner."""
    from streetvision.config import load_schema, resolve_experiments
    from streetvision.layout import load_index

    root = tmp_path / "imgs"
    for i in range(200):  # enough ordinary images for every split to hold both classes
        folder = root / ("roadwork" if i % 2 else "none")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:03d}.jpg").write_bytes(jpeg_bytes(i, 32))
    grey16, shown = sixteen_bit_grey_png(1)
    (root / "none" / "grey16.png").write_bytes(grey16)
    (root / "none" / "bomb.png").write_bytes(png_bomb(30000, 30000))
    (root / "roadwork" / "big.png").write_bytes(png_bomb(12000, 12000))
    Image.fromarray(np.zeros((8, 8), np.float32),
                    "F").save(root / "none" / "float.tif")  # 32-bit float pixels
    name = os.fsdecode(b"caf\xe9-latin1.jpg")  # not UTF-8
    (root / "roadwork" / name).write_bytes(jpeg_bytes(999, 32))
    (root / "none" / "notes.txt").write_text("not an image")
    (root / "none" / "clip.gif").write_bytes(b"GIF89a")
    (root / "README").write_text("outside the class folders")

    config = {"demo": False, "experiments": {"x": {}}, "data": {"source": "image_folder", "path": str(root),
                                                                  "max_pixels": 100_000_000}}
    data_cfg = resolve_experiments(config, load_schema(repo / "config" / "schema.yaml"))["x"]["data"]
    out = tmp_path / "results" / "x" / "data"
    manifest = json.loads(ingest_and_index(cfg={"data": data_cfg}, out_dir=out, experiment="x").read_text())
    quarantine = pd.read_csv(out / "quarantine.csv").set_index("origin")
    reasons = {os.path.basename(origin): reason for origin, reason in quarantine["reason"].items()}
    assert reasons["bomb.png"].startswith("too large: 30000x30000 = 900,000,000 pixels, more than the limit "
                                          "of 100,000,000")
    assert reasons["big.png"].startswith("too large: 12000x12000 = 144,000,000 pixels")
    assert reasons["float.tif"].startswith("undecodable: pixel mode F has no 8-bit RGB meaning")
    index = load_index(out).set_index("origin")
    grey = index.loc[str(root / "none" / "grey16.png")]
    assert np.array_equal(np.asarray(read_index_image(grey["path"]))[..., 0], shown)
    copied = index.loc["".join([str(root / "roadwork"), "/caf\\xe9-latin1.jpg"])]  # stored, its name escaped
    assert copied["path"].startswith(str(out / "images")) or "images/" in copied["path"]
    skipped = manifest["metrics"]["unsupported_files"]
    assert skipped["by_reason"] == {"unsupported extension .txt": 1, "unsupported extension .gif": 1,
                                    "outside the class folders": 1}
    assert manifest["metrics"]["quarantined_by_reason"] == {"too large": 2, "undecodable": 1}


def read_index_image(path):
    from streetvision.data.datasets import open_rgb

    return open_rgb(path)


def test_any_mask_center_means_the_validators_fallback_not_an_error(tmp_path):
    """A mask_center validators cannot use (malformed text, words, floats) is not an error: like every stored
    form, it makes their levels 1-3 raise, so the row is sent unaugmented (level -1); the index says so."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from streetvision.data.natix import read_natix_parquet

    values = ["[1, 2", '"middle"', '["a", 3]', "[1.5, 2.0]", None]
    pq.write_table(pa.table({"image": [jpeg_bytes(i) for i in range(5)], "label": [1] * 5,
                             "scene_description": ["cones"] * 5, "mask_center": values}), tmp_path / "s.parquet")
    rows = list(read_natix_parquet(tmp_path))
    assert [row.level_fallback for row in rows] == [True, True, True, True, False]
    assert rows[0].mask_center == '"[1, 2"' and rows[4].mask_center is None


def test_a_duplicated_yaml_key_names_file_and_key(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("train:\n  lr: 0.1\n  max_epochs: 3\n  lr: 0.2\n")
    with pytest.raises(ConfigError,
                       match=r"my\.yaml: not valid YAML .*key 'lr' is given twice \(first on line 2, "
                                          r"again on line 4\)"):
        load_config_file(path)


# ------------------------------------------------------------------ through Snakemake


def snakemake(workdir, *args, timeout=600):
    return run_cli("snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args, timeout=timeout)


def write(workdir, name, content) -> str:
    path = workdir / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return str(path)


@pytest.mark.slow
def test_configs_that_would_silently_change_the_run_stop_before_any_job(tmp_path):
    """An experiment named like a shared results folder, a config stacked on the demo that sets data.source, the
    demo stacked under natix.yaml, a non-finite number, an unknown backbone, no data section: each stops
    `snakemake -n` with a message naming the key (and file), and nothing is written."""
    tiny = deep_merge(TINY_CONFIG, {})
    cases = [
        ([write(tmp_path, "report.yaml", {**tiny, "experiments": {"report": {}}})],
         "config key 'experiments.report': the name is taken by results/report"),
        ([str(REPO / "config/config.yaml"), write(tmp_path, "my.yaml", {"data": {"source": "natix_parquet",
                                                                                  "path": str(tmp_path)}})],
         f"config keys 'data.source' (set in {tmp_path / 'my.yaml'}) and 'data.sources' (set in "
         f"{REPO / 'config/config.yaml'}) are both set"),
        ([str(REPO / "config/config.yaml"), str(REPO / "config/natix.yaml")],
         "config keys 'data.source' (set in"),
        ([write(tmp_path, "inf.yaml", deep_merge(tiny, {"train": {"lr": float("inf")}}))],
         "config key 'train.lr': inf is not a finite number"),
        ([write(tmp_path, "timm.yaml", deep_merge(tiny, {"model": {"backbone": "vit_tiny_patch16_224x"}}))],
         "config key 'model.backbone': 'vit_tiny_patch16_224x' is not a timm model"),
        ([write(tmp_path, "nodata.yaml", {"experiments": {"x": {}}, "model": tiny["model"]})],
         "config key 'experiments.x.data.source' (or 'data.sources') is required"),
    ]
    for configfiles, message in cases:
        done = snakemake(tmp_path, "-n", "--configfile", *configfiles)
        output = done.stdout + done.stderr
        assert done.returncode != 0 and message in output, (configfiles, output[-2000:])
        assert "hf_export.enabled: false" not in output  # no wrong hint for an unknown backbone
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_a_data_only_run_needs_no_hotkey_or_weights_and_reruns_when_the_source_changes(tmp_path):
    """A real-data config without weights and without a hotkey: its data target runs (16-bit PNGs, bombs,
    odd names inside), the full target stops before any job naming both; adding an image re-runs the data
    step, and `streetvision verify --deep` catches a changed byte in the image store."""
    from helpers import write_natix_shards

    shards = write_natix_shards(tmp_path / "natix", 60)
    config = write(tmp_path, "real.yaml", {
        "experiments": {"real": {}}, "data": {"source": "natix_parquet", "path": str(shards)},
        "model": {**TINY_CONFIG["model"], "init": "file",
                  "pretrained_file": str(tmp_path / "missing.safetensors")}})
    target = "results/real/data/manifest.json"
    done = snakemake(tmp_path, target, "--cores", "1", "--configfile", config)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "this run reaches: ingest, data" in done.stdout + done.stderr
    full = snakemake(tmp_path, "-n", "--configfile", config)
    output = full.stdout + full.stderr
    assert full.returncode != 0 and "missing.safetensors does not exist" in output
    assert "submitted_by': 'anonymous' is not a hotkey" in output

    unchanged = snakemake(tmp_path, target, "-n", "--configfile", config)
    assert "Nothing to be done" in unchanged.stdout + unchanged.stderr
    extra = pd.read_parquet(next(shards.glob("*.parquet"))).head(1)
    extra["image"] = [{"bytes": jpeg_bytes(4242, 48), "path": "new.jpg"}]
    extra.to_parquet(shards / "train-00099.parquet", index=False)
    again = snakemake(tmp_path, target, "-n", "--configfile", config)
    assert "Params have changed since last execution" in again.stdout + again.stderr
    assert snakemake(tmp_path, target, "--cores", "1", "--configfile", config).returncode == 0
    manifest = json.loads((tmp_path / target).read_text())
    ingest = json.loads(next((tmp_path / "results/_ingest").glob("*/manifest.json")).read_text())
    assert manifest["metrics"]["rows_read"] == 61 and ingest["source_signature"]["natix_parquet:" + str(shards)][
        "files"] == 3

    index = pd.read_parquet(tmp_path / "results/real/data/index.parquet")
    stored = tmp_path / "results/real/data" / index["path"].iloc[0]
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size: only a re-hash sees it
    stored.write_bytes(bytes(data))
    assert run_cli("streetvision", "verify", str(tmp_path / "results")).returncode == 0
    deep = run_cli("streetvision", "verify", "--deep", str(tmp_path / "results"))
    assert deep.returncode == 1 and f"{stored}: SHA-256 differs" in deep.stdout
