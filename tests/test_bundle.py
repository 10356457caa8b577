"""Bundle: output mapping, verified loading (tamper cases), parity with phase 1, CLI predict."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from helpers import jpeg_bytes, run_cli
from PIL import Image

from streetvision.bundle import BundleError, load_bundle
from streetvision.bundle.policy import EPSILON, outputs, remap
from streetvision.io.hashing import sha256_file


@pytest.mark.parametrize("threshold", [0.05, 0.3, 0.5, 0.77, 0.99])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_round_of_the_output_is_the_decision_at_and_around_the_threshold(threshold, temperature):
    t_logit = math.log(threshold / (1 - threshold))
    logits = np.r_[np.linspace(-12, 12, 2001), t_logit, np.nextafter(t_logit, -np.inf), np.nextafter(t_logit, np.inf)]
    out = outputs(logits, {"threshold": threshold, "temperature": temperature})
    assert np.array_equal(out["decision"], out["raw_probability"] >= threshold)
    assert all(round(o) == d for o, d in zip(out["output"], out["decision"], strict=True))
    assert np.all((out["output"] >= 0) & (out["output"] <= 1))
    assert not np.any(out["output"] == 0.5)
    order = np.argsort(logits, kind="stable")
    assert np.all(np.diff(out["output"][order]) >= 0)  # monotone: keeps the ranking


def test_remap_sends_the_threshold_just_above_one_half():
    assert remap(np.array([0.3]), 0.3, np.array([True]))[0] == pytest.approx(0.5 + EPSILON)
    assert remap(np.array([0.2999]), 0.3, np.array([False]))[0] < 0.5
    assert remap(np.array([1.0]), 0.3, np.array([True]))[0] == 1.0


@pytest.fixture(scope="module")
def pipeline(tiny_run):
    """The session's tiny run: one bundle per policy, built from the same upstream steps."""
    return {"threshold": tiny_run["bundle"], "scrc": tiny_run["bundle_scrc"]}


def manifests(pipeline) -> dict:
    return {policy: json.loads((folder / "manifest.json").read_text()) for policy, folder in pipeline.items()}


def bundle_dir(pipeline, policy="threshold"):
    return pipeline[policy] / "bundle"


@pytest.mark.slow
def test_parity_with_phase_1_and_one_policy_each(pipeline):
    for policy, manifest in manifests(pipeline).items():
        parity = manifest["metrics"]["parity"]
        assert parity["max_abs_probability_diff"] <= 1e-5 and parity["decision_mismatches"] == 0
        assert json.loads((bundle_dir(pipeline, policy) / "policy.json").read_text())["type"] == policy
        assert set(manifest["metrics"]["val_test_by_level"]) == {"level_0", "level_3"}
    assert not (bundle_dir(pipeline, "threshold") / "gate.safetensors").exists()
    assert (bundle_dir(pipeline, "scrc") / "gate.safetensors").exists()
    card = json.loads((bundle_dir(pipeline) / "model_card.json").read_text())
    assert {"model_name", "version", "submitted_by", "submission_time", "architecture", "notes"} <= set(card)


@pytest.mark.slow
def test_detector_api(pipeline):
    detector = load_bundle(bundle_dir(pipeline, "scrc"))
    image = Image.open(__import__("io").BytesIO(jpeg_bytes(1, 80)))
    p = detector(image)
    assert 0 <= p <= 1 and detector.predict_batch([image, image]) == pytest.approx([p, p], rel=1e-6)  # batched BLAS
    details = detector.predict_details([image])[0]
    assert round(details["probability"]) == details["decision"] and isinstance(details["accepted"], bool)


def tampered(pipeline, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir(pipeline), copy)
    return copy


def rewrite_index(bundle, change):
    index = json.loads((bundle / "bundle.json").read_text())
    change(index)
    (bundle / "bundle.json").write_text(json.dumps(index))


@pytest.mark.slow
def test_flipped_byte_is_refused_naming_the_file(pipeline, tmp_path):
    bundle = tampered(pipeline, tmp_path)
    weights = bytearray((bundle / "model.safetensors").read_bytes())
    weights[-10] ^= 0x01
    (bundle / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(BundleError, match=r"model\.safetensors: checksum mismatch"):
        load_bundle(bundle)


@pytest.mark.slow
def test_missing_file_is_refused(pipeline, tmp_path):
    bundle = tampered(pipeline, tmp_path)
    (bundle / "policy.json").unlink()
    with pytest.raises(BundleError, match=r"policy\.json: listed in bundle\.json but missing"):
        load_bundle(bundle)


@pytest.mark.slow
@pytest.mark.parametrize("bad_path, message", [("../outside.json", r"'\.\.' escapes"),
                                               ("/etc/passwd", "absolute paths")])
def test_path_escapes_are_refused(pipeline, tmp_path, bad_path, message):
    bundle = tampered(pipeline, tmp_path)
    (tmp_path / "outside.json").write_text("{}")
    rewrite_index(bundle, lambda i: i["files"].append({"path": bad_path, "role": "notes", "sha256": "0",
                                                       "bytes": 2}))
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)


@pytest.mark.slow
def test_symlink_leaving_the_bundle_is_refused(pipeline, tmp_path):
    bundle = tampered(pipeline, tmp_path)
    outside = tmp_path / "policy_elsewhere.json"
    shutil.move(bundle / "policy.json", outside)
    (bundle / "policy.json").symlink_to(outside)
    with pytest.raises(BundleError, match=r"policy\.json: resolves outside the bundle"):
        load_bundle(bundle)


@pytest.mark.slow
def test_pickle_bearing_weights_are_never_unpickled(pipeline, tmp_path):
    bundle = tampered(pipeline, tmp_path)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"weights": Payload()}, bundle / "model.safetensors")  # a pickle under the expected name
    size, digest = (bundle / "model.safetensors").stat().st_size, sha256_file(bundle / "model.safetensors")

    def relist(index):
        entry = next(f for f in index["files"] if f["path"] == "model.safetensors")
        entry.update(bytes=size, sha256=digest)

    rewrite_index(bundle, relist)
    with pytest.raises(BundleError,
                       match=r"model\.safetensors: not a valid safetensors file \(refusing to unpickle\)"):
        load_bundle(bundle)
    assert not marker.exists()
    (bundle / "model.safetensors").rename(bundle / "model.pt")
    rewrite_index(bundle,
                  lambda i: next(f for f in i["files"] if f["path"] == "model.safetensors").update(path="model.pt"))
    with pytest.raises(BundleError, match=r"model\.pt: weights must be \.safetensors"):
        load_bundle(bundle)
    assert not marker.exists()


@pytest.mark.slow
def test_cli_predict_reports_unreadable_images_and_goes_on(pipeline, tmp_path):
    good = tmp_path / "street.jpg"
    good.write_bytes(jpeg_bytes(3, 64))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    done = run_cli("streetvision", "predict", "--bundle", str(bundle_dir(pipeline, "scrc")), str(good),
                   str(bad), str(good))
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 1 and len(lines) == 2
    assert lines[0]["path"] == str(good) and round(lines[0]["probability"]) == lines[0]["decision"]
    assert "accepted" in lines[0]
    assert "broken.jpg" in done.stderr and "cannot read image" in done.stderr
    tampered_bundle = tampered(pipeline, tmp_path)
    (tampered_bundle / "model_config.json").write_text("{}")
    refused = run_cli("streetvision", "predict", "--bundle", str(tampered_bundle), str(good))
    assert refused.returncode == 2 and "model_config.json: checksum mismatch" in refused.stderr


@pytest.mark.slow
def test_the_hugging_face_export_decides_like_the_bundle_and_serves_through_the_cli(tiny_run, tmp_path):
    """The tiny run's hf_export step: the repo the stock miner loads, checked on the challenge pass."""
    manifest = json.loads((tiny_run["hf_export"] / "manifest.json").read_text())
    assert manifest["metrics"]["architecture"] == "ViTForImageClassification"
    for check in manifest["metrics"]["parity"].values():
        assert check["decision_mismatches"] == 0 and check["max_abs_probability_diff"] < 1e-4
    repo = tiny_run["hf_export"] / "repo"
    card = json.loads((repo / "model_card.json").read_text())
    assert isinstance(card["submission_time"], int) and card["demo"] is True
    image = tmp_path / "street.jpg"
    image.write_bytes(jpeg_bytes(3, 224))
    served = run_cli("streetvision", "predict", "--model", str(repo), str(image))
    bundled = run_cli("streetvision", "predict", "--model", str(tiny_run["bundle"] / "bundle"), str(image))
    assert served.returncode == 0 and bundled.returncode == 0, served.stderr[-2000:] + bundled.stderr[-2000:]
    hf, ours = json.loads(served.stdout), json.loads(bundled.stdout)
    assert hf["decision"] == ours["decision"] and round(hf["probability"]) == hf["decision"]
