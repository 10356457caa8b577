"""Step ``thresholds`` (phase 2): on val_calib's challenge pass (what validators will send), the exact
MCC-optimal threshold and the temperature; val_test scored at that threshold.

Deliberately light: numpy, scipy, pandas and matplotlib only (no torch, no Lightning).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from streetvision import layout
from streetvision.calibration.temperature import calibration_metrics, fit_temperature
from streetvision.calibration.thresholds import select_threshold_max_mcc, sweep
from streetvision.figures import sweep_figure
from streetvision.logs import log_result
from streetvision.metrics import compute_all_metrics, validator_metrics
from streetvision.phases import step_recorder

STEP = "thresholds"

SWEEP_COLUMNS = ["threshold", "tp", "fp", "tn", "fn", "mcc", "accuracy", "fnr", "fpr"]
TIE_BREAK = "highest threshold among exact MCC ties"


def run_thresholds(*, baseline_dir: str | Path, out_dir: str | Path, experiment: str,
                   workflow_dir: str | None = None) -> Path:
    recorder = step_recorder(STEP, out_dir, experiment,
                             {"split": "val_calib", "view": "challenge", "tie_break": TIE_BREAK},
                             consumes=[layout.manifest_of(baseline_dir)], workflow_dir=workflow_dir)
    calib = layout.predictions_of(baseline_dir, "val_calib")
    test = layout.predictions_of(baseline_dir, "val_test")
    clean_test = layout.predictions_of(baseline_dir, "val_test", "clean")
    curve = pd.DataFrame(sweep(calib["label"], calib["probability"],
                               where="val_calib probabilities"))[SWEEP_COLUMNS]
    threshold, mcc = select_threshold_max_mcc(calib["label"], calib["probability"])
    temperature = fit_temperature(calib["logit"], calib["label"])
    at_threshold = compute_all_metrics(test["label"], test["probability"], threshold=threshold)
    validator = validator_metrics(test["label"], (test["probability"] >= threshold).astype(float))
    result = {
        "threshold": threshold, "val_calib_mcc": mcc, "tie_break": TIE_BREAK,
        "rule": "positive iff probability >= threshold",
        "view": "challenge", "n_val_calib": len(calib), "temperature": temperature,
        "calibration_val_calib": calibration_metrics(calib["label"], calib["logit"], temperature),
        "val_test_at_threshold": at_threshold, "val_test_validator": validator,
        "val_test_at_0.5": compute_all_metrics(test["label"], test["probability"], threshold=0.5),
        "val_test_clean_at_threshold": compute_all_metrics(clean_test["label"], clean_test["probability"],
                                                           threshold),
    }
    recorder.write_csv(layout.Thresholds.SWEEP, curve, float_format="%.10g")
    recorder.write_figure(layout.Thresholds.PLOT, sweep_figure(curve, threshold))
    recorder.write_json(layout.Thresholds.RESULT, result)
    clean_mcc = result["val_test_clean_at_threshold"]["mcc"]
    recorder.metrics.update({
        "threshold": threshold, "val_calib_mcc": mcc, "temperature": temperature,
        "val_test_mcc_at_threshold": at_threshold["mcc"],
        "val_test_mcc_at_0.5": result["val_test_at_0.5"]["mcc"],
        "val_test_accuracy_at_threshold": at_threshold["accuracy"],
        "val_test_natix_reward": validator["natix_reward"], "val_test_clean_mcc_at_threshold": clean_mcc,
    })
    test_mcc = at_threshold["mcc"]
    log_result(STEP, experiment, f"threshold {threshold:.4f} (val_calib MCC {mcc:.3f}), T = {temperature:.2f}"
                                 f"; val_test challenge-pass MCC {test_mcc:.3f} (clean {clean_mcc:.3f})")
    return recorder.finish()
