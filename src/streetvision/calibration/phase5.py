"""Phase 5: temperature scaling on val_calib, then selective risk control calibrated on val_conformal.

The selection score is the gate's P(correct) (default) or stage 1's calibrated confidence in its own
decision. The decision itself never changes here: it is stage 1's at the phase-2 threshold.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from streetvision.calibration.gate import risk_coverage
from streetvision.calibration.phase2 import read_predictions
from streetvision.calibration.phase3 import decisions, plot_risk_coverage
from streetvision.calibration.scrc import (
    conformal_risk_control,
    fit_selection_threshold,
    minimum_calibration_size,
    risk_upper_bound,
    selective_counts,
)
from streetvision.calibration.temperature import apply_temperature, fit_temperature
from streetvision.io.atomic import atomic_write_json, atomic_write_with
from streetvision.io.manifest import MANIFEST_NAME, PhaseRecorder
from streetvision.metrics import brier_score, expected_calibration_error

log = logging.getLogger(__name__)


def selection_scores(table: pd.DataFrame, gate_scores: pd.DataFrame | None, temperature: float, threshold: float,
                     kind: str, split: str) -> np.ndarray:
    if kind == "gate":
        if gate_scores is None or gate_scores["id"].tolist() != table["id"].tolist():
            raise ValueError(f"gate scores for split '{split}' are missing or not aligned with phase 1's predictions")
        scores = gate_scores["gate_score"].to_numpy()
    else:  # calibrated confidence in the decision actually taken
        p = apply_temperature(table["logit"], temperature)
        predicted = table["probability"].to_numpy() >= threshold
        scores = np.where(predicted, p, 1 - p)
    if not np.isfinite(scores).all():
        raise ValueError(f"selection scores of split '{split}' contain NaN or infinite values")
    return scores


def plot_reliability(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, bins: int = 15) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=110)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    edges = np.linspace(0, 1, bins + 1)
    for name, (labels, probs) in curves.items():
        which = np.searchsorted(edges[1:-1], probs, side="left")
        filled = np.bincount(which, minlength=bins) > 0
        mean_p = np.bincount(which, weights=probs, minlength=bins)[filled] / np.bincount(which, minlength=bins)[filled]
        rate = np.bincount(which, weights=labels, minlength=bins)[filled] / np.bincount(which, minlength=bins)[filled]
        ax.plot(mean_p, rate, marker="o", label=name)
    ax.set_xlabel("predicted P(roadwork)")
    ax.set_ylabel("observed frequency")
    ax.set_title("Reliability on val_test")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def calibration_metrics(labels, logits, temperature: float) -> dict:
    before = apply_temperature(logits, 1.0)
    after = apply_temperature(logits, temperature)
    return {"ece_before": expected_calibration_error(labels, before), "ece_after": expected_calibration_error(labels, after),
            "brier_before": brier_score(labels, before), "brier_after": brier_score(labels, after)}


def run_scrc_phase(scrc_cfg: dict, phase1_dir, phase2_dir, phase3_dir, out_dir, experiment: str,
                   workflow_dir: str | None = None) -> Path:
    phase1_dir, phase2_dir, phase3_dir, out_dir = map(Path, (phase1_dir, phase2_dir, phase3_dir, out_dir))
    recorder = PhaseRecorder(out_dir, "phase5_scrc", experiment, scrc_cfg, workflow_dir=workflow_dir)
    for upstream in (phase1_dir, phase2_dir, phase3_dir):
        recorder.consume(upstream / MANIFEST_NAME)
    threshold = json.loads((phase2_dir / "thresholds.json").read_text())["threshold"]
    alpha, delta, kind = scrc_cfg["alpha"], scrc_cfg["delta"], scrc_cfg["score"]

    calib = read_predictions(phase1_dir, "val_calib")
    temperature = fit_temperature(calib["logit"], calib["label"])
    tables, scores, errors = {}, {}, {}
    for split in ("val_conformal", "val_test"):
        tables[split] = read_predictions(phase1_dir, split)
        gate = pd.read_parquet(phase3_dir / "scores" / f"{split}.parquet") if kind == "gate" else None
        scores[split] = selection_scores(tables[split], gate, temperature, threshold, kind, split)
        errors[split] = 1 - decisions(tables[split], threshold)[1]

    warnings = []
    where = f"val_conformal ({kind} scores)"
    selection = fit_selection_threshold(scores["val_conformal"], errors["val_conformal"], alpha, delta,
                                        scrc_cfg["grid_size"], where=where)
    if math.isinf(selection):
        warnings.append(f"no threshold is certified at alpha={alpha}, delta={delta}: the policy abstains on every image")
        log.warning(warnings[-1])
    crc = conformal_risk_control(scores["val_conformal"], errors["val_conformal"], alpha, where=where)

    result = {
        "alpha": alpha, "delta": delta, "selection_score": kind, "decision_threshold": threshold,
        "temperature": temperature, "selection_threshold": selection, "crc_threshold": crc,
        "grid_size": scrc_cfg["grid_size"], "n_val_conformal": len(tables["val_conformal"]),
        "minimum_calibration_size": minimum_calibration_size(alpha, delta, scrc_cfg["grid_size"]),
        "guarantee": f"P(error rate among accepted > {alpha}) <= {delta} over the val_conformal draw",
        "warnings": warnings,
    }
    for split in ("val_conformal", "val_test"):
        acc, wrong = selective_counts(scores[split], errors[split].astype(float), np.array([selection]))
        n_acc, n_wrong = int(acc[0]), int(wrong[0])
        result[split] = {
            "coverage": n_acc / len(scores[split]), "accepted": n_acc, "errors_accepted": n_wrong,
            "selective_risk": n_wrong / n_acc if n_acc else 0.0,
            "full_coverage_risk": float(errors[split].mean()),
            "crc_joint_risk": float(np.mean(errors[split] * (scores[split] >= crc))),
        }
        if split == "val_conformal":
            result[split]["risk_upper_bound"] = risk_upper_bound(n_acc, n_wrong, 1 - delta / scrc_cfg["grid_size"])
    test = tables["val_test"]
    result["calibration_val_calib"] = calibration_metrics(calib["label"], calib["logit"], temperature)
    result["calibration_val_test"] = calibration_metrics(test["label"], test["logit"], temperature)

    plot_reliability({"before (T = 1)": (test["label"].to_numpy(), apply_temperature(test["logit"], 1.0)),
                      f"after (T = {temperature:.2f})": (test["label"].to_numpy(), apply_temperature(test["logit"], temperature))},
                     recorder.path("reliability.png"))
    plot_risk_coverage({f"{kind} score": risk_coverage(scores["val_test"], errors["val_test"])},
                       recorder.path("risk_coverage.png"), "SCRC on val_test", alpha=alpha)
    atomic_write_json(recorder.path("temperature.json"), {"temperature": temperature, **result["calibration_val_test"]})
    atomic_write_json(recorder.path("scrc.json"), result)
    for name in ("reliability.png", "risk_coverage.png", "temperature.json", "scrc.json"):
        recorder.add_artifact(name)
    recorder.metrics.update({
        "selection_threshold": selection, "temperature": temperature, "warnings": warnings,
        "val_test_coverage": result["val_test"]["coverage"], "val_test_selective_risk": result["val_test"]["selective_risk"],
        "val_conformal_coverage": result["val_conformal"]["coverage"],
        "val_conformal_risk_upper_bound": result["val_conformal"]["risk_upper_bound"],
        "ece_val_test_after": result["calibration_val_test"]["ece_after"],
    })
    log.info("SCRC: threshold %s; val_test coverage %.3f, selective risk %.4f (alpha %.3f)", selection,
             result["val_test"]["coverage"], result["val_test"]["selective_risk"], alpha)
    return recorder.finish()
