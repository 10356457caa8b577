"""Hugging Face export for the stock NATIX miner: heads, policy folding, card, config-time checks, and
decision parity loaded the miner's way with the installed transformers and with 4.45.2 (the miner's pin,
installed by .ci/transformers-pin.sh; skipped when absent unless STREETVISION_REQUIRE_TRANSFORMERS_PIN=1)."""

import io
import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from streetvision.bundle.hf_card import ModelCardError, build_model_card, miner_yaml, ss58_problem
from streetvision.bundle.hf_convert import TIE_MARGIN, fold_policy, hf_target_for_config
from streetvision.bundle.policy import outputs
from streetvision.config import ConfigError
from streetvision.models.classifier import RoadworkClassifier

ALICE = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"  # Substrate's published dev accounts
BOB = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"
ALICE_POLKADOT = "15oF4uVJwmo4TdGW7VfQxNLavjCXviqxT9S1MgbjMNHr6Sp5"  # same key, network prefix 0
TINY_VIT = {"backbone": "vit_tiny_patch16_224", "img_size": 64, "init": "random", "head": "auto",
            "backbone_kwargs": {"patch_size": 8, "embed_dim": 64, "depth": 3, "num_heads": 2,
                                "class_token": True, "global_pool": "token"}}
DINOV2_S = {"backbone": "vit_small_patch14_dinov2", "img_size": 224, "init": "random", "head": "auto",
            "backbone_kwargs": {}}


# --- folding the policy into the classifier -------------------------------------------------------------

def pipeline_sigmoid(z: np.ndarray) -> np.ndarray:
    """The image-classification pipeline's postprocessing: numpy sigmoid on the float32 logits."""
    z = z.astype(np.float32)
    return 1.0 / (1.0 + np.exp(-z))


@pytest.mark.parametrize("threshold", [0.03, 0.31, 0.5, 0.77, 0.995])
@pytest.mark.parametrize("temperature", [0.4, 1.0, 2.7])
def test_folded_score_rounds_to_the_bundle_decision_below_at_and_above_the_threshold(threshold, temperature):
    # The sweep puts t on one image's probability: that image's float32 logit is the tie.
    tie = np.float32(math.log(threshold / (1 - threshold)))
    t = float(1 / (1 + np.exp(-np.float64(tie))))
    up = [np.nextafter(tie, np.float32(np.inf)) + np.float32(k * 1e-3) for k in (0, 1, 1000)]
    below = [np.float32(tie - d) for d in (TIE_MARGIN * temperature * 3, 1e-3, 1.0)]
    band = [np.float32(tie - TIE_MARGIN * temperature * 0.3)]  # within m T below the tie: positive here, by design
    logits = np.array([tie, *up, *below, *band], dtype=np.float32)

    w, b = fold_policy(torch.tensor([[1.0]]), torch.tensor([0.0]), t, temperature)
    z = torch.nn.functional.linear(torch.from_numpy(logits)[:, None], w,
                                   b)[:, 0].numpy()  # float32, as served
    score = pipeline_sigmoid(z)
    decision = outputs(logits.astype(np.float64), {"threshold": t, "temperature": temperature})["decision"]

    assert decision.tolist() == [True] * 4 + [False] * 3 + [False]
    assert ((score > 0.5) == decision)[:-1].all()  # validators round 0.5 down
    assert score[-1] > 0.5  # the documented band [logit t - m T, logit t)
    assert score[0] > 0.5 and not np.any(score == 0.5)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_folded_score_is_the_calibrated_probability_at_threshold_one_half(temperature):
    gen = torch.Generator().manual_seed(0)
    weight, bias, features = torch.randn(1, 8, generator=gen), torch.randn(1, generator=gen), torch.randn(100, 8, generator=gen)
    logits = (features.double() @ weight.double().T + bias.double())[:, 0].numpy()
    w, b = fold_policy(weight, bias, 0.5, temperature)
    score = pipeline_sigmoid(torch.nn.functional.linear(features, w, b)[:, 0].numpy())
    calibrated = 1 / (1 + np.exp(-logits / temperature))
    assert np.max(np.abs(score - calibrated)) < 1e-5  # the tie margin moves it by 2.5e-6


def test_fold_refuses_thresholds_and_temperatures_it_cannot_fold():
    for bad in (0.0, 1.0, float("nan")):
        with pytest.raises(ValueError, match="threshold"):
            fold_policy(torch.ones(1, 1), torch.zeros(1), bad, 1.0)
    with pytest.raises(ValueError, match="temperature"):
        fold_policy(torch.ones(1, 1), torch.zeros(1), 0.5, 0.0)


# --- model card ------------------------------------------------------------------------------------------

def card(**overrides):
    values = {"model_name": "roadwork-x", "description": "A roadwork detector.", "version": "1.2.3",
              "submitted_by": ALICE, "architecture": "Dinov2ForImageClassification", "notes": "n"}
    return build_model_card(**{**values, **overrides})


def test_ss58_check_decodes_the_address():
    assert ss58_problem(ALICE) is None and ss58_problem(BOB) is None
    assert "checksum" in ss58_problem(ALICE[:-1] + "Z")
    assert "prefix 0" in ss58_problem(ALICE_POLKADOT)  # a valid SS58 address, but not Bittensor's format
    assert "base58" in ss58_problem("5Grwva0F5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY")  # '0' is not base58
    assert "bytes" in ss58_problem(ALICE[:-3])


def test_model_card_fields_and_errors_name_the_config_key():
    good = card(submission_time=1_700_000_000)
    assert set(good) == {"model_name", "description", "version", "submitted_by", "submission_time",
                         "architecture", "notes"}
    assert good["submission_time"] == 1_700_000_000 and isinstance(card()["submission_time"], int)
    with pytest.raises(ModelCardError, match=r"bundle\.model_card\.submitted_by"):
        card(submitted_by="streetvision-demo")
    with pytest.raises(ModelCardError, match=r"bundle\.model_card\.submitted_by"):
        card(submitted_by=ALICE[:-1] + "Z")
    with pytest.raises(ModelCardError, match=r"bundle\.model_card\.version"):
        card(version="1.2")
    with pytest.raises(ModelCardError, match=r"bundle\.model_card\.description"):
        card(description=" ")


def test_demo_card_accepts_any_submitter_and_says_it_is_a_demo():
    demo = card(submitted_by="streetvision-demo", demo=True)
    assert demo["demo"] is True and "DEMO" in demo["notes"]
    assert card(demo=True,
                notes=demo["notes"])["notes"] == demo["notes"]  # re-built from a demo card: said once
    assert "demo" not in card()
    assert "<hf-user>/<repo-name>" in miner_yaml(None) and "hf_repo: 'me/roadwork'" in miner_yaml("me/roadwork")


# --- heads and config-time exportability -------------------------------------------------------------------

def test_heads_read_what_the_transformers_classes_classify():
    from streetvision.models.backbone import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone(TINY_VIT).eval()
    images = torch.randn(2, 3, 64, 64)
    tokens = backbone.forward_features(images)
    token, token_mean, auto = (RoadworkClassifier(backbone, head=h) for h in ("token", "token_mean", "auto"))
    assert auto.pooling == "token"  # no LayerScale: ViT
    assert torch.equal(token.features(images), tokens[:, 0])
    assert torch.allclose(token_mean.features(images), torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], -1))
    logits, features = token_mean.forward_with_features(images)
    assert logits.shape == (2,) and features.shape == (2, 128)
    assert torch.equal(RoadworkClassifier(backbone).features(images), backbone(images))  # pooled: as before
    with pytest.raises(ValueError, match=r"model\.head"):
        RoadworkClassifier(backbone, head="cls")


@pytest.mark.parametrize(("cfg", "expected"), [
    (DINOV2_S, ("Dinov2ForImageClassification", "token_mean")),
    ({**DINOV2_S, "head": "pooled"}, ("Dinov2ForImageClassification", "token")),  # today's DINOv2 head
    (TINY_VIT, ("ViTForImageClassification", "token")),
    ({**TINY_VIT, "head": "token_mean"}, ("Dinov2ForImageClassification", "token_mean")),
])
def test_config_time_check_names_the_transformers_class(cfg, expected):
    target = hf_target_for_config(cfg)
    assert (target.architecture, target.head) == expected


@pytest.mark.parametrize(("cfg", "key"), [
    ({"backbone": "resnet18", "img_size": 64, "backbone_kwargs": {}, "head": "auto"}, "model.backbone"),
    ({"backbone": "resnet18", "img_size": 64, "backbone_kwargs": {}, "head": "token"}, "model.head"),
    ({**TINY_VIT, "backbone_kwargs": {**TINY_VIT["backbone_kwargs"], "class_token": False,
                                      "global_pool": "max"}},
     "model.backbone"),  # the demo's max-pooled ViT
    ({**TINY_VIT, "backbone_kwargs": {**TINY_VIT["backbone_kwargs"], "global_pool": "avg"}},
     "model.backbone"),  # the final norm moves after the pooling (fc_norm)
    ({**TINY_VIT, "head": "pooled", "backbone_kwargs": {**TINY_VIT["backbone_kwargs"], "global_pool": "map"}},
     "model.head"),  # attention pooling
    ({**TINY_VIT, "head_hidden": 32}, "model.head_hidden"),
    ({**DINOV2_S, "backbone": "vit_small_patch14_reg4_dinov2"}, "model.backbone"),  # register tokens
    ({**DINOV2_S, "backbone": "vit_giant_patch14_dinov2"}, "model.backbone"),  # SwiGLU MLP
])
def test_config_time_check_refuses_what_transformers_cannot_express(cfg, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        hf_target_for_config(cfg)


# --- preprocessing -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest"])
def test_eval_resize_is_torchvisions_float_tensor_resize(interpolation):
    """What transformers 4.45.2's ViTImageProcessorFast runs (torchvision's v1 tensor resize)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as v1

    from streetvision.data.transforms import FloatResize

    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 224, 224), dtype=np.uint8))
    for size in (64, 112, 224):
        expected = v1.resize(image, [size, size], InterpolationMode(interpolation), antialias=True)
        assert torch.equal(FloatResize(size, interpolation)(image), expected)


# --- export + parity (the miner's way)
# ------------------------------------------------------------------------

def challenge_jpegs(n: int) -> list:
    """224x224 JPEGs (PIL defaults, quality 75) of synthetic street scenes, as the miner receives them."""
    from streetvision.data.synthetic import render_scene

    images = []
    for i in range(n):
        buffer = io.BytesIO()
        render_scene(100 + i, i % 2, size=224).save(buffer, format="JPEG")
        images.append(Image.open(io.BytesIO(buffer.getvalue())))
    return images


def make_bundle(root, model_cfg, images, temperature=1.7, submitted_by=ALICE):
    """A phase-6 bundle of a random-init classifier whose threshold sits exactly on one image's probability."""
    from streetvision.bundle.export import write_model_bundle
    from streetvision.bundle.load import load_bundle
    from streetvision.models.backbone import build_backbone, data_config
    from streetvision.models.spec import ClassifierSpec

    torch.manual_seed(0)
    backbone = build_backbone(model_cfg)  # random init: DINOv2's LayerScale set to 1, so the model is not constant
    spec = ClassifierSpec.from_config({**model_cfg, "head_hidden": 0, "head_dropout": 0.0},
                                      data_config(backbone, model_cfg["img_size"]))
    model = spec.build(backbone)
    card = {"model_name": "roadwork-test", "version": "0.3.1", "submitted_by": submitted_by, "notes": "test"}
    provisional = {"type": "threshold", "threshold": 0.5, "temperature": temperature}
    write_model_bundle(root / "bundle", model, spec, provisional, card)
    probabilities = [d["raw_probability"] for d in load_bundle(root / "bundle").predict_details(images)]
    policy = {**provisional,
              "threshold": float(np.sort(probabilities)[len(images) // 2])}  # a tie, as the sweep makes
    write_model_bundle(root / "bundle", model, spec, policy, card)
    return root / "bundle"


def transformers_pin():
    from streetvision.bundle.hf_miner import find_transformers_pin

    pin = find_transformers_pin()
    if pin is None:
        message = "transformers 4.45.2 is not installed: run .ci/transformers-pin.sh"
        if os.environ.get("STREETVISION_REQUIRE_TRANSFORMERS_PIN") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return pin


TINY_BASE = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    from streetvision.bundle.hf_export import export_hf_repo
    from streetvision.bundle.load import load_bundle

    root = tmp_path_factory.mktemp("tiny")
    images = challenge_jpegs(24)
    bundle = make_bundle(root, TINY_VIT, images)
    summary = export_hf_repo(bundle, root / "repo", description="Tiny test ViT.", license="mit", hf_repo=None,
                             evaluation={"val_test": {"mcc": 0.5, "mcc_ci": [0.3, 0.7], "n": 24}},
                             base_model=TINY_BASE, datasets=("natix-network-org/roadwork",),
                             submission_time=1_700_000_000)
    return load_bundle(bundle), root / "repo", images, summary


@pytest.mark.slow
def test_tiny_vit_export_files(tiny_export):
    from transformers import AutoConfig, AutoImageProcessor

    _, repo, _, summary = tiny_export
    assert sorted(p.name for p in repo.iterdir()) == sorted(summary["files"])
    config = AutoConfig.from_pretrained(repo)
    assert config.architectures == ["ViTForImageClassification"] and config.id2label == {0: "Roadwork"}
    assert config.num_labels == 1 and summary["self_check_max_abs_logit_diff"] < 1e-5
    assert AutoImageProcessor.from_pretrained(repo, use_fast=True).size == {"height": 64, "width": 64}
    model_card = json.loads((repo / "model_card.json").read_text())
    assert model_card["submitted_by"] == ALICE and model_card["submission_time"] == 1_700_000_000
    assert model_card["version"] == "0.3.1" and "ViTForImageClassification" in model_card["architecture"]
    from huggingface_hub import ModelCard

    card = ModelCard.load(repo / "README.md")  # the Hub's own parser of the metadata
    assert (card.data.license, card.data.library_name, card.data.pipeline_tag) == ("mit", "transformers",
                                                                                   "image-classification")
    assert card.data.base_model == TINY_BASE and card.data.datasets == ["natix-network-org/roadwork"]
    assert {"roadwork", "natix", "vit"} <= set(card.data.tags)
    (result,) = card.data.eval_results
    assert (result.metric_type, result.metric_value, result.dataset_name) == ("matthews_correlation", 0.5,
                                                                              "val_test")
    assert result.metric_name == "MCC (95 % CI [0.3000, 0.7000])"
    # scored on the workflow's own split, not on the Hub data set it trained on
    assert result.dataset_type == "streetvision/val_test" and result.task_type == "image-classification"
    readme = card.content
    assert "<hf-user>/<repo-name>" in readme and "| val_test | 24 | 0.5 | [0.3, 0.7] |" in readme
    assert "<hf-user>/<repo-name>" in (repo / "miner.yaml").read_text()


@pytest.mark.slow
def test_tiny_vit_parity_with_the_installed_transformers(tiny_export):
    """transformers >= 4.49 resizes 224 -> 64 px with torchvision's uint8 kernels (a few grey levels off our
    float resize, which follows the miner's 4.45.2): scores agree to 1e-3, decisions wherever the image is
    farther than that from the threshold. At 224 px (real models) the versions agree exactly (DINOv2 test)."""
    from streetvision.bundle.hf_miner import expected_scores, hf_parity, load_hf_detector

    detector, repo, images, _ = tiny_export
    parity = hf_parity(detector, repo, images)
    assert parity["model_class"] == "ViTForImageClassification" and parity["n"] == 24
    assert parity["max_abs_probability_diff"] < 1e-3 and parity["exactly_one_half"] == 0
    expected, _ = expected_scores(detector, images)
    assert all(abs(expected[i] - 0.5) < 1e-3 for i in parity["mismatched_images"])
    served = load_hf_detector(repo).predict_details(images[:4])
    assert [d["decision"] for d in served] == [int(s > 0.5) for s in expected[:4]]


@pytest.mark.slow
def test_tiny_vit_parity_with_the_miners_transformers_4_45_2(tiny_export):
    from streetvision.bundle.hf_miner import hf_parity

    detector, repo, images, _ = tiny_export
    parity = hf_parity(detector, repo, images, pin_dir=transformers_pin())
    assert parity["transformers"] == "4.45.2" and parity["processor_class"] == "ViTImageProcessorFast"
    assert parity["decision_mismatches"] == 0 and parity["max_abs_probability_diff"] < 1e-6
    assert parity["exactly_one_half"] == 0 and parity["positives"] == 12  # the tie image included


@pytest.mark.slow
def test_a_challenge_through_the_miners_request_path(tiny_export):
    """Challenges encoded as validators send them (base64 of the JPEG; level -1 at full size), opened as the stock
    miner opens them and answered with its calls, in the installed transformers and the miner's 4.45.2."""
    from helpers import photo_like_jpeg

    from streetvision.bundle.hf_miner import (
        expected_scores,
        hf_parity,
        load_miner_pipeline,
        miner_image,
        roadwork_score,
        validator_payload,
    )
    from streetvision.data.challenge import simulate_challenge, validator_cache

    detector, repo, _, _ = tiny_export
    sources = [validator_cache(photo_like_jpeg(seed, 480, 270)) for seed in range(4)]
    payloads = [validator_payload(simulate_challenge(source, level=level, rng=seed)[1]["jpeg_bytes"])
                for seed, source in enumerate(sources) for level in (-1, 0, 1, 2, 3)]
    images = [miner_image(payload) for payload in payloads]
    assert [image.size for image in images[:5]] == [(480, 270)] + [(224, 224)] * 4 and images[0].format == "JPEG"
    pipe = load_miner_pipeline(repo)
    scores = np.array([roadwork_score(pipe, image) for image in images])
    expected, decisions = expected_scores(detector, images)
    assert np.max(np.abs(scores - expected)) < 1e-3  # transformers 5's uint8 resize, a few grey levels off
    assert all((s > 0.5) == d or abs(e - 0.5) < 1e-3 for s, e, d in zip(scores, expected, decisions, strict=True))
    pinned = hf_parity(detector, repo, images, pin_dir=transformers_pin())  # the stock miner's version
    assert pinned["decision_mismatches"] == 0 and pinned["max_abs_probability_diff"] < 1e-6


@pytest.mark.slow
def test_dinov2_export_parity_in_both_transformers_versions(tmp_path):
    """vit_small_patch14_dinov2 at 224 px (random init, LayerScale set to 1) -> Dinov2ForImageClassification."""
    from streetvision.bundle.hf_export import export_hf_repo
    from streetvision.bundle.hf_miner import hf_parity
    from streetvision.bundle.load import load_bundle

    images = challenge_jpegs(8)
    bundle = make_bundle(tmp_path, DINOV2_S, images, temperature=0.8)
    summary = export_hf_repo(bundle, tmp_path / "repo", description="DINOv2-S test.", hf_repo="me/roadwork")
    assert summary["architecture"] == "Dinov2ForImageClassification" and summary["head"] == "token_mean"
    detector = load_bundle(bundle)
    for pin_dir in (None, transformers_pin()):
        parity = hf_parity(detector, tmp_path / "repo", images, pin_dir=pin_dir)
        assert parity["model_class"] == "Dinov2ForImageClassification"
        assert parity["decision_mismatches"] == 0 and parity["max_abs_probability_diff"] < 1e-5, parity
        assert parity["exactly_one_half"] == 0 and parity["positives"] == 4


def test_export_refuses_a_bundle_whose_hotkey_is_not_one(tmp_path):
    from streetvision.bundle.hf_export import export_hf_repo

    bundle = make_bundle(tmp_path, TINY_VIT, challenge_jpegs(3), submitted_by="streetvision-demo")
    with pytest.raises(ModelCardError, match=r"bundle\.model_card\.submitted_by"):
        export_hf_repo(bundle, tmp_path / "repo", description="d")
    assert not (tmp_path / "repo").exists()  # nothing written before the checks


def test_only_a_flip_at_the_threshold_itself_is_forgiven_and_a_drifting_score_fails():
    """A score within 1e-5 of 0.5 may round either way in two float32 implementations; nothing else may."""
    from streetvision.bundle.hf_miner import compare_decisions
    from streetvision.phases.hf_export import parity_problems

    expected = np.array([0.2, 0.5 + 2e-6, 0.9, 0.5 - 3e-6])
    decisions = np.array([0, 1, 1, 0])
    served = expected + np.array([1e-7, -4e-6, 1e-7, 5e-6])  # the two near-ties cross 0.5
    check = compare_decisions(served, expected, decisions)
    assert check["decision_mismatches"] == 0 and check["borderline_flips"] == 2 and check["borderline_images"] == [1, 3]
    assert parity_problems(check) == []

    far_flip = compare_decisions(np.array([0.2, 0.49, 0.9, 0.4]), np.array([0.2, 0.51, 0.9, 0.4]), decisions)
    assert far_flip["decision_mismatches"] == 1 and far_flip["mismatched_images"] == [1]
    assert "1 decision mismatch(es) (images [1])" in parity_problems(far_flip)[0]

    drift = compare_decisions(expected + 0.01, expected, decisions)  # same decisions, wrong scores
    assert drift["decision_mismatches"] == 0 and "max |Δp| 1.0e-02" in parity_problems(drift)[0]
    assert parity_problems(compare_decisions(np.array([0.5]), np.array([0.5 + 2.5e-6]),
                                             np.array([1])))[-1] == \
        "1 score(s) of exactly 0.5"
