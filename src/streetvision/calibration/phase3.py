"""Phase 3: fit the gate on val_calib; score val_conformal and val_test; compare with max-probability."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from streetvision.calibration.gate import GateInputs, fit_gate, gate_scores, risk_coverage
from streetvision.calibration.phase2 import read_predictions
from streetvision.io.atomic import atomic_save_tensors, atomic_write_json, atomic_write_with
from streetvision.io.manifest import MANIFEST_NAME, PhaseRecorder
from streetvision.metrics import auroc

log = logging.getLogger(__name__)

SCORED_SPLITS = ("val_conformal", "val_test")


def read_split(phase1_dir: Path, split: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Predictions and features of one split, checked to be in the same order."""
    from safetensors import safe_open

    table = read_predictions(phase1_dir, split)
    path = phase1_dir / "features" / f"{split}.safetensors"
    with safe_open(str(path), framework="np") as handle:
        features = handle.get_tensor("features")
        ids = json.loads(handle.metadata()["ids"])
    if ids != table["id"].tolist():
        raise ValueError(f"{path}: feature rows are not in the order of predictions/{split}.parquet")
    return table, features


def decisions(table: pd.DataFrame, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Stage 1's decision at the phase-2 threshold and whether it is correct."""
    predicted = (table["probability"].to_numpy() >= threshold).astype(int)
    return predicted, (predicted == table["label"].to_numpy()).astype(int)


def max_probability(table: pd.DataFrame) -> np.ndarray:
    p = table["probability"].to_numpy()
    return np.maximum(p, 1 - p)


def plot_risk_coverage(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str,
                       alpha: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for name, (coverage, risk) in curves.items():
        ax.plot(coverage, risk, label=name)
    if alpha is not None:
        ax.axhline(alpha, color="red", linestyle="--", linewidth=1, label=f"α = {alpha}")
    ax.set_xlabel("coverage (fraction accepted)")
    ax.set_ylabel("selective risk (error rate among accepted)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def run_gate_phase(gate_cfg: dict, phase1_dir: str | Path, phase2_dir: str | Path, out_dir: str | Path,
                   experiment: str, workflow_dir: str | None = None) -> Path:
    phase1_dir, phase2_dir, out_dir = Path(phase1_dir), Path(phase2_dir), Path(out_dir)
    recorder = PhaseRecorder(out_dir, "phase3_gate", experiment, gate_cfg, seed=gate_cfg["seed"], workflow_dir=workflow_dir)
    recorder.consume(phase1_dir / MANIFEST_NAME)
    recorder.consume(phase2_dir / MANIFEST_NAME)
    threshold = json.loads((phase2_dir / "thresholds.json").read_text())["threshold"]

    calib, calib_features = read_split(phase1_dir, "val_calib")
    _, calib_correct = decisions(calib, threshold)
    if calib_correct.min() == calib_correct.max():
        raise ValueError("val_calib: stage 1 is right on every sample (or wrong on every one); "
                         "the gate has nothing to learn — use more val_calib data")
    x = GateInputs(calib_features, calib["logit"].to_numpy()).matrix()
    gate, fit_info = fit_gate(x, calib_correct, gate_cfg)

    atomic_save_tensors(recorder.path("gate.safetensors"), gate.state_dict(), {"format": "streetvision-gate"})
    atomic_write_json(recorder.path("gate_config.json"), {
        "in_dim": int(x.shape[1]), "hidden": gate_cfg["hidden"], "loss": gate_cfg["loss"],
        "inputs": "features + [logit, |p-0.5|, entropy(p)]", "decision_threshold": threshold})
    recorder.add_artifact("gate.safetensors")
    recorder.add_artifact("gate_config.json")

    report = {"fit": fit_info}
    for split in SCORED_SPLITS:
        table, features = read_split(phase1_dir, split)
        _, correct = decisions(table, threshold)
        scores = gate_scores(gate, GateInputs(features, table["logit"].to_numpy()).matrix())
        baseline = max_probability(table)
        out = pd.DataFrame({"id": table["id"], "gate_score": scores, "max_probability": baseline, "correct": correct})
        atomic_write_with(recorder.path(f"scores/{split}.parquet"), lambda tmp, o=out: o.to_parquet(tmp, index=False))
        recorder.add_artifact(f"scores/{split}.parquet")
        report[split] = {"n": len(out), "errors": int((1 - correct).sum()),
                         "error_detection_auroc_gate": auroc(correct, scores),
                         "error_detection_auroc_max_probability": auroc(correct, baseline)}
        if split == "val_test":
            errors = 1 - correct
            plot_risk_coverage({"gate": risk_coverage(scores, errors),
                                "max probability": risk_coverage(baseline, errors)},
                               recorder.path("risk_coverage.png"), "Risk–coverage on val_test")
            recorder.add_artifact("risk_coverage.png")
    atomic_write_json(recorder.path("gate_report.json"), report)
    recorder.add_artifact("gate_report.json")
    recorder.metrics.update({k: report["val_test"][k] for k in
                             ("error_detection_auroc_gate", "error_detection_auroc_max_probability", "errors", "n")})
    log.info("gate: val_test error-detection AUROC %.4f (max-probability %.4f)",
             report["val_test"]["error_detection_auroc_gate"], report["val_test"]["error_detection_auroc_max_probability"])
    return recorder.finish()
