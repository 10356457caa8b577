"""Step ``thresholds`` (phase 2): the MCC-optimal threshold on val_calib; val_test at it and at 0.5.

Deliberately light: numpy, pandas and matplotlib only (no torch, no Lightning).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from streetvision import layout
from streetvision.calibration.thresholds import select_threshold_max_mcc, sweep
from streetvision.figures import sweep_figure
from streetvision.io.manifest import PhaseRecorder
from streetvision.logs import log_result
from streetvision.metrics import compute_all_metrics

SWEEP_COLUMNS = ["threshold", "tp", "fp", "tn", "fn", "mcc", "accuracy", "fnr", "fpr"]
TIE_BREAK = "highest threshold among exact MCC ties"


def run_thresholds(*, baseline_dir: str | Path, out_dir: str | Path, experiment: str,
                   workflow_dir: str | None = None) -> Path:
    recorder = PhaseRecorder(out_dir, "phase2_thresholds", experiment, {"split": "val_calib", "tie_break": TIE_BREAK},
                             consumes=[layout.manifest_of(baseline_dir)], workflow_dir=workflow_dir)
    calib = layout.predictions_of(baseline_dir, "val_calib")
    test = layout.predictions_of(baseline_dir, "val_test")
    curve = pd.DataFrame(sweep(calib["label"], calib["probability"], where="val_calib probabilities"))[SWEEP_COLUMNS]
    threshold, mcc = select_threshold_max_mcc(calib["label"], calib["probability"])
    at_threshold = compute_all_metrics(test["label"], test["probability"], threshold=threshold)
    at_half = compute_all_metrics(test["label"], test["probability"], threshold=0.5)
    recorder.write_csv(layout.Thresholds.SWEEP, curve, float_format="%.10g")
    recorder.write_figure(layout.Thresholds.PLOT, sweep_figure(curve, threshold))
    recorder.write_json(layout.Thresholds.RESULT, {
        "threshold": threshold, "val_calib_mcc": mcc, "tie_break": TIE_BREAK, "rule": "positive iff probability >= threshold",
        "n_val_calib": len(calib), "val_test_at_threshold": at_threshold, "val_test_at_0.5": at_half,
    })
    recorder.metrics.update({
        "threshold": threshold, "val_calib_mcc": mcc,
        "val_test_mcc_at_threshold": at_threshold["mcc"], "val_test_mcc_at_0.5": at_half["mcc"],
        "val_test_accuracy_at_threshold": at_threshold["accuracy"],
    })
    log_result("thresholds", experiment, f"threshold {threshold:.4f} (val_calib MCC {mcc:.3f}); "
                                         f"val_test MCC {at_threshold['mcc']:.3f} vs {at_half['mcc']:.3f} at 0.5")
    return recorder.finish()
