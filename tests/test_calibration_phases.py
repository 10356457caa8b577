"""Phases 2, 3 and 5 on fabricated phase-1 outputs (fast, controllable, no training)."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from streetvision.calibration.scrc import CalibrationSizeError
from streetvision.errors import StreetvisionError
from streetvision.io.manifest import PhaseRecorder, verify_tree
from streetvision.phases.gate import run_gate
from streetvision.phases.scrc import run_scrc
from streetvision.phases.thresholds import run_thresholds

GATE = {"loss": "bce", "gatekeeper_alpha": 0.5, "hidden": 32, "lr": 0.003, "weight_decay": 1e-4,
        "batch_size": 128, "max_epochs": 150, "patience": 20, "holdout_fraction": 0.2, "seed": 0,
        "cross_fit_folds": 3}
SCRC = {"alpha": 0.1, "delta": 0.1, "score": "gate", "grid_size": None, "method": "split_fixed_sequence",
        "per_decision": False, "sequence_size": None}


def fake_phase1(root, n=600, seed=0, nan_split=None):
    """Predictions whose errors are flagged by feature 0, so a gate can learn to find them."""
    rng = np.random.default_rng(seed)
    phase1 = root / "phase1_baseline"
    rec = PhaseRecorder(phase1, "phase1_baseline", "t", {})
    for split in ("val_select", "val_calib", "val_conformal", "val_test"):
        labels = rng.integers(0, 2, n)
        hard = rng.random(n) < 0.15  # on hard images stage 1 is a coin flip
        logits = np.where(hard, rng.normal(0, 0.3, n), np.where(labels == 1, 1, -1) * rng.uniform(1, 4, n))
        if split == nan_split:
            logits[5] = np.nan
        features = rng.normal(size=(n, 8)).astype(np.float32)
        features[:, 0] += 3 * hard
        ids = [f"{split}-{i}" for i in range(n)]
        table = pd.DataFrame({"id": ids, "label": labels.astype("int8"), "logit": logits,
                              "probability": 1 / (1 + np.exp(-logits)),
                              "domain": np.where(np.arange(n) % 3 == 0, "synthetic", "real")})
        rec.write_parquet(f"predictions/{split}.parquet", table)  # the challenge pass
        rec.write_parquet(f"predictions/{split}.clean.parquet", table)
        if split != "val_select":
            rec.write_tensors(f"features/{split}.safetensors", {"features": torch.from_numpy(features)},
                              {"ids": json.dumps(ids)})
    rec.finish()
    return phase1


def run_all(root, scrc=SCRC, gate=GATE, **fake):
    """Phases 2, 3 (only when SCRC scores with the gate: it trains a model) and 5 on a fake phase 1."""
    phase1 = fake_phase1(root, **fake)
    steps = {"baseline_dir": phase1, "thresholds_dir": root / "phase2_thresholds"}
    run_thresholds(baseline_dir=phase1, out_dir=steps["thresholds_dir"], experiment="t")
    gate_dir = None
    if scrc["score"] == "gate":
        gate_dir = root / "phase3_gate"
        run_gate(cfg={"gate": gate}, **steps, out_dir=gate_dir, experiment="t")
    manifest = run_scrc(cfg={"scrc": scrc}, **steps, gate_dir=gate_dir, out_dir=root / "phase5_scrc",
                        experiment="t")
    return json.loads(manifest.read_text())


CONFIDENCE = {**SCRC, "score": "confidence"}  # no gate to train: fast


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["bce", "gatekeeper"])
def test_gate_finds_the_errors_and_scrc_meets_its_target(tmp_path, loss):
    manifest = run_all(tmp_path, gate={**GATE, "loss": loss})
    gate = json.loads((tmp_path / "phase3_gate" / "manifest.json").read_text())["metrics"]
    assert gate["error_detection_auroc_gate"] > 0.8
    m = manifest["metrics"]
    assert 0.3 < m["val_test_coverage"] < 1.0
    assert m["val_test_selective_risk"] <= 0.1 + 0.05  # alpha, plus slack for one finite test split
    assert m["val_conformal_risk_upper_bound"]["all"] <= 0.1
    assert m["warnings"] == []
    thresholds = json.loads((tmp_path / "phase2_thresholds" / "thresholds.json").read_text())
    assert thresholds["calibration_val_calib"]["ece_after"] <= thresholds["calibration_val_calib"]["ece_before"] + 1e-9
    scrc = json.loads((tmp_path / "phase5_scrc" / "scrc.json").read_text())
    assert scrc["temperature"] == thresholds["temperature"] > 0
    assert scrc["method"] == "split_fixed_sequence" and scrc["fits"]["all"]["candidates"] > 100
    assert set(scrc["val_test"]["by_domain"]) == {"real", "synthetic"}
    calib_scores = pd.read_parquet(tmp_path / "phase3_gate" / "scores" / "val_calib.parquet")
    assert calib_scores["cross_fitted"].all() and len(calib_scores) == 600
    assert verify_tree(tmp_path)[1] == []
    for picture in ("phase3_gate/risk_coverage.png", "phase5_scrc/reliability.png",
                    "phase5_scrc/risk_coverage.png"):
        assert (tmp_path / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_confidence_score_option(tmp_path):
    manifest = run_all(tmp_path, scrc=CONFIDENCE)
    assert manifest["config"]["scrc"]["score"] == "confidence" and 0 < manifest["metrics"]["val_test_coverage"] <= 1


def test_no_feasible_threshold_abstains_with_a_warning(tmp_path):
    manifest = run_all(tmp_path, scrc={**CONFIDENCE, "alpha": 0.001, "delta": 0.5, "grid_size": 2,
                                       "method": "bonferroni"}, n=2000)
    assert manifest["metrics"]["selection_threshold"] == "inf"
    assert manifest["metrics"]["val_test_coverage"] == 0.0
    assert "abstains on every image" in manifest["metrics"]["warnings"][0]


def test_too_small_conformal_split_says_how_many_are_needed(tmp_path):
    with pytest.raises(CalibrationSizeError,
                       match=r"val_conformal \(confidence scores\): SCRC needs at least 230"):
        run_all(tmp_path, scrc={**CONFIDENCE, "alpha": 0.01}, n=150)
    assert not (tmp_path / "phase5_scrc" / "manifest.json").exists()


@pytest.mark.parametrize("split", ["val_calib", "val_test"])
def test_nan_logits_into_phase2_name_the_split(tmp_path, split):
    phase1 = fake_phase1(tmp_path, nan_split=split)
    with pytest.raises(StreetvisionError, match=f"1 of 600 logits/probabilities of split '{split}' are NaN"):
        run_thresholds(baseline_dir=phase1, out_dir=tmp_path / "phase2_thresholds", experiment="t")
    assert not (tmp_path / "phase2_thresholds" / "manifest.json").exists()


def test_phase3_and_5_do_not_import_lightning():
    import subprocess
    import sys

    code = ("import sys, streetvision.phases.gate, streetvision.phases.scrc; "
            "print([m for m in ('lightning', 'peft', 'timm') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_inf_threshold_round_trips_through_json(tmp_path):
    manifest = run_all(tmp_path, scrc={**CONFIDENCE, "alpha": 0.001, "delta": 0.5, "grid_size": 2,
                                       "method": "bonferroni"}, n=2000)
    assert math.isinf(float(manifest["metrics"]["selection_threshold"]))


@pytest.mark.slow
def test_per_decision_thresholds_bound_each_call_group(tmp_path):
    manifest = run_all(tmp_path, scrc={**SCRC, "per_decision": True})
    scrc = json.loads((tmp_path / "phase5_scrc" / "scrc.json").read_text())
    assert set(scrc["selection_threshold"]) == {"positive", "negative"} and set(scrc["fits"]) == {"positive", "negative"}
    assert all(fit["test_level"] == pytest.approx(0.05) for fit in scrc["fits"].values())  # delta / 2 each
    for group in ("positive", "negative"):
        assert scrc["val_conformal"]["risk_upper_bound"][group] <= 0.1
        assert {"coverage", "selective_risk", "accepted"} <= set(scrc["val_test"][group])
    assert "positive calls" in scrc["guarantee"] and manifest["metrics"]["warnings"] == []


def test_temperature_fit_matches_a_brute_force_search():
    from streetvision.calibration.temperature import fit_temperature

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, 5000)
    labels = (rng.random(5000) < 1 / (1 + np.exp(-logits / 2.5))).astype(int)  # true T = 2.5
    grid = np.exp(np.linspace(np.log(0.5), np.log(10), 4001))
    nll = [np.mean(np.logaddexp(0, -np.where(labels == 1, logits, -logits) / t)) for t in grid]
    assert fit_temperature(logits, labels) == pytest.approx(grid[int(np.argmin(nll))], rel=2e-3)
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.1)
