"""Phase 2: choose the MCC-optimal threshold on val_calib; report val_test at it and at 0.5.

Deliberately light: numpy, pandas and matplotlib only (no torch, no Lightning).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from streetvision.calibration.thresholds import ThresholdInputError, select_threshold_max_mcc, sweep
from streetvision.io.atomic import atomic_write_json, atomic_write_with
from streetvision.io.manifest import MANIFEST_NAME, PhaseRecorder
from streetvision.metrics import compute_all_metrics

log = logging.getLogger(__name__)

SWEEP_COLUMNS = ["threshold", "tp", "fp", "tn", "fn", "mcc", "accuracy", "fnr", "fpr"]
TIE_BREAK = "highest threshold among exact MCC ties"


def read_predictions(phase1_dir: Path, split: str) -> pd.DataFrame:
    path = phase1_dir / "predictions" / f"{split}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: phase 1 predictions for split '{split}' are missing")
    table = pd.read_parquet(path)
    bad = ~(np.isfinite(table["logit"]) & np.isfinite(table["probability"]))
    if bad.any():
        raise ThresholdInputError(f"{path}: {int(bad.sum())} of {len(table)} logits/probabilities of split "
                                  f"'{split}' are NaN or infinite (first id: {table.loc[bad, 'id'].iloc[0]})")
    return table


def plot_sweep(curve: pd.DataFrame, chosen: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for column in ("mcc", "accuracy", "fpr", "fnr"):
        ax.plot(curve["threshold"], curve[column], label=column.upper() if len(column) < 4 else column)
    ax.axvline(chosen, color="black", linestyle="--", linewidth=1, label=f"chosen {chosen:.4f}")
    ax.axvline(0.5, color="grey", linestyle=":", linewidth=1, label="0.5")
    ax.set_xlabel("threshold on P(roadwork) (val_calib)")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(loc="lower center", ncol=3, fontsize=8)
    ax.set_title("Exact threshold sweep")
    fig.tight_layout()
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def run_threshold_phase(phase1_dir: str | Path, out_dir: str | Path, experiment: str, workflow_dir: str | None = None) -> Path:
    phase1_dir, out_dir = Path(phase1_dir), Path(out_dir)
    recorder = PhaseRecorder(out_dir, "phase2_thresholds", experiment, {"split": "val_calib", "tie_break": TIE_BREAK},
                             workflow_dir=workflow_dir)
    recorder.consume(phase1_dir / MANIFEST_NAME)
    calib = read_predictions(phase1_dir, "val_calib")
    test = read_predictions(phase1_dir, "val_test")
    curve = pd.DataFrame(sweep(calib["label"], calib["probability"], where="val_calib probabilities"))[SWEEP_COLUMNS]
    threshold, mcc = select_threshold_max_mcc(calib["label"], calib["probability"])
    at_threshold = compute_all_metrics(test["label"], test["probability"], threshold=threshold)
    at_half = compute_all_metrics(test["label"], test["probability"], threshold=0.5)
    result = {
        "threshold": threshold, "val_calib_mcc": mcc, "tie_break": TIE_BREAK, "rule": "positive iff probability >= threshold",
        "n_val_calib": len(calib), "val_test_at_threshold": at_threshold, "val_test_at_0.5": at_half,
    }
    atomic_write_with(recorder.path("sweep.csv"), lambda tmp: curve.to_csv(tmp, index=False, float_format="%.10g"))
    plot_sweep(curve, threshold, recorder.path("sweep.png"))
    atomic_write_json(recorder.path("thresholds.json"), result)
    for name in ("sweep.csv", "sweep.png", "thresholds.json"):
        recorder.add_artifact(name)
    recorder.metrics.update({
        "threshold": threshold, "val_calib_mcc": mcc,
        "val_test_mcc_at_threshold": at_threshold["mcc"], "val_test_mcc_at_0.5": at_half["mcc"],
        "val_test_accuracy_at_threshold": at_threshold["accuracy"],
    })
    log.info("threshold %.6f (val_calib MCC %.4f); val_test MCC %.4f (vs %.4f at 0.5)",
             threshold, mcc, at_threshold["mcc"], at_half["mcc"])
    return recorder.finish()
