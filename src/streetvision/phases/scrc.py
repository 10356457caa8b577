"""Step ``scrc`` (phase 5): temperature scaling on val_calib, then selective risk control on val_conformal.

The selection score is the gate's P(correct) or stage 1's calibrated confidence in its own decision. The
decision itself never changes here: it is stage 1's at the phase-2 threshold.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from streetvision import layout
from streetvision.calibration.gate import risk_coverage
from streetvision.calibration.scrc import (
    conformal_risk_control,
    fit_selection_threshold,
    minimum_calibration_size,
    risk_upper_bound,
    selective_counts,
)
from streetvision.calibration.selection import decision_confidence, stage1_decisions
from streetvision.calibration.temperature import apply_temperature, calibration_metrics, fit_temperature
from streetvision.errors import StreetvisionError
from streetvision.figures import reliability_figure, risk_coverage_figure
from streetvision.io.manifest import PhaseRecorder
from streetvision.logs import log_result

log = logging.getLogger(__name__)

SPLITS = ("val_conformal", "val_test")


def selection_scores(table, gate_dir: Path | None, temperature: float, threshold: float, kind: str,
                     split: str) -> np.ndarray:
    """Per image of ``split``: the gate's P(correct), or the calibrated confidence in stage 1's decision."""
    if kind == "gate":
        gate = layout.gate_scores_of(gate_dir, split)
        if gate["id"].tolist() != table["id"].tolist():
            raise StreetvisionError(f"gate scores for split '{split}' are not aligned with phase 1's predictions")
        scores = gate["gate_score"].to_numpy()
    else:
        predicted, _ = stage1_decisions(table["probability"], table["label"], threshold)
        scores = decision_confidence(apply_temperature(table["logit"], temperature), predicted)
    if not np.isfinite(scores).all():
        raise StreetvisionError(f"selection scores of split '{split}' contain NaN or infinite values")
    return scores


def run_scrc(*, cfg: dict, baseline_dir: str | Path, thresholds_dir: str | Path, gate_dir: str | Path | None = None,
             out_dir: str | Path, experiment: str, workflow_dir: str | None = None) -> Path:
    scrc_cfg = cfg["scrc"]
    consumed = [baseline_dir, thresholds_dir] + ([gate_dir] if gate_dir else [])
    recorder = PhaseRecorder(out_dir, "phase5_scrc", experiment, cfg, workflow_dir=workflow_dir,
                             consumes=[layout.manifest_of(d) for d in consumed])
    threshold = layout.threshold_of(thresholds_dir)
    alpha, delta, kind = scrc_cfg["alpha"], scrc_cfg["delta"], scrc_cfg["score"]

    calib = layout.predictions_of(baseline_dir, "val_calib")
    temperature = fit_temperature(calib["logit"], calib["label"])
    tables, scores, errors = {}, {}, {}
    for split in SPLITS:
        tables[split] = layout.predictions_of(baseline_dir, split)
        scores[split] = selection_scores(tables[split], gate_dir, temperature, threshold, kind, split)
        errors[split] = 1 - stage1_decisions(tables[split]["probability"], tables[split]["label"], threshold)[1]

    warnings = []
    where = f"val_conformal ({kind} scores)"
    selection = fit_selection_threshold(scores["val_conformal"], errors["val_conformal"], alpha, delta,
                                        grid_size=scrc_cfg["grid_size"], method="bonferroni", where=where)
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
    for split in SPLITS:
        acc, wrong = selective_counts(scores[split], errors[split].astype(float), np.array([selection]))
        n_acc, n_wrong = int(acc[0]), int(wrong[0])
        result[split] = {
            "coverage": n_acc / len(scores[split]), "accepted": n_acc, "errors_accepted": n_wrong,
            "selective_risk": n_wrong / n_acc if n_acc else None,  # undefined when nothing is accepted
            "full_coverage_risk": float(errors[split].mean()),
            "crc_joint_risk": float(np.mean(errors[split] * (scores[split] >= crc))),
        }
        if split == "val_conformal":
            result[split]["risk_upper_bound"] = risk_upper_bound(n_acc, n_wrong, 1 - delta / scrc_cfg["grid_size"])
    test = tables["val_test"]
    result["calibration_val_calib"] = calibration_metrics(calib["label"], calib["logit"], temperature)
    result["calibration_val_test"] = calibration_metrics(test["label"], test["logit"], temperature)

    labels = test["label"].to_numpy()
    recorder.write_figure(layout.Scrc.RELIABILITY_PLOT, reliability_figure({
        "before (T = 1)": (labels, apply_temperature(test["logit"], 1.0)),
        f"after (T = {temperature:.2f})": (labels, apply_temperature(test["logit"], temperature))}))
    recorder.write_figure(layout.Scrc.RISK_PLOT, risk_coverage_figure(
        {f"{kind} score": risk_coverage(scores["val_test"], errors["val_test"])}, "SCRC on val_test", alpha=alpha))
    recorder.write_json(layout.Scrc.TEMPERATURE, {"temperature": temperature, **result["calibration_val_test"]})
    recorder.write_json(layout.Scrc.RESULT, result)
    recorder.metrics.update({
        "selection_threshold": selection, "temperature": temperature, "warnings": warnings,
        "val_test_coverage": result["val_test"]["coverage"], "val_test_selective_risk": result["val_test"]["selective_risk"],
        "val_conformal_coverage": result["val_conformal"]["coverage"],
        "val_conformal_risk_upper_bound": result["val_conformal"]["risk_upper_bound"],
        "ece_val_test_after": result["calibration_val_test"]["ece_after"],
    })
    risk = result["val_test"]["selective_risk"]
    log_result("scrc", experiment, f"val_test coverage {result['val_test']['coverage']:.3f}, selective risk "
                                   f"{'undefined' if risk is None else f'{risk:.4f}'} (alpha {alpha})")
    return recorder.finish()
