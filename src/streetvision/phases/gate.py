"""Step ``gate`` (phase 3): fit the gate on val_calib; score val_conformal and val_test; compare it with
the max-probability baseline at detecting stage 1's errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from streetvision import layout
from streetvision.calibration.gate import (
    GateFit,
    GateInputs,
    GateUnfittableError,
    cross_fitted_gate_scores,
    fit_gate,
    gate_scores,
)
from streetvision.calibration.selection import max_probability, risk_coverage, stage1_decisions
from streetvision.config import section_settings
from streetvision.figures import risk_coverage_figure
from streetvision.logs import log_result
from streetvision.metrics import auroc
from streetvision.phases import step_recorder

STEP = "gate"


def run_gate(*, cfg: dict, baseline_dir: str | Path, thresholds_dir: str | Path, out_dir: str | Path,
             experiment: str, workflow_dir: str | None = None) -> Path:
    gate_cfg = cfg["gate"]
    recorder = step_recorder(STEP, out_dir, experiment, cfg, seed=gate_cfg["seed"], workflow_dir=workflow_dir,
                             consumes=[layout.manifest_of(baseline_dir), layout.manifest_of(thresholds_dir)])
    threshold = layout.threshold_of(thresholds_dir)

    calib, calib_features = layout.features_of(baseline_dir, "val_calib")
    _, calib_correct = stage1_decisions(calib["probability"], calib["label"], threshold)
    if calib_correct.min() == calib_correct.max():
        raise GateUnfittableError("val_calib: stage 1 is right on every sample (or wrong on every one); the "
                                  "gate has "
                                  "nothing to learn — use more val_calib data, or bundle.policy: threshold")
    x = GateInputs(calib_features, calib["logit"].to_numpy()).matrix()
    fit = section_settings(GateFit, gate_cfg)
    gate, fit_info = fit_gate(x, calib_correct, fit)
    recorder.write_tensors(layout.Gate.WEIGHTS, gate.state_dict(), {"format": "streetvision-gate"})
    recorder.write_json(layout.Gate.CONFIG, {
        "in_dim": int(x.shape[1]), "hidden": gate_cfg["hidden"], "loss": gate_cfg["loss"],
        "inputs": "features + [logit, |p-0.5|, entropy(p)]", "decision_threshold": threshold})

    # val_calib's own scores come from gates that never saw the row (phase 5 builds SCRC's candidates from
    # them).
    recorder.write_parquet(layout.Gate.scores("val_calib"), pd.DataFrame({
        "id": calib["id"], "gate_score": cross_fitted_gate_scores(x, calib_correct, fit,
                                                                  gate_cfg["cross_fit_folds"]),
        "max_probability": max_probability(calib["probability"]), "correct": calib_correct,
        "cross_fitted": True}))
    report = {"fit": fit_info}
    for split in layout.Gate.SCORED_SPLITS:
        table, features = layout.features_of(baseline_dir, split)
        _, correct = stage1_decisions(table["probability"], table["label"], threshold)
        scores = gate_scores(gate, GateInputs(features, table["logit"].to_numpy()).matrix())
        baseline = max_probability(table["probability"])
        recorder.write_parquet(layout.Gate.scores(split), pd.DataFrame(
            {"id": table["id"], "gate_score": scores, "max_probability": baseline, "correct": correct}))
        report[split] = {"n": len(table), "errors": int((1 - correct).sum()),
                         "error_detection_auroc_gate": auroc(correct, scores),
                         "error_detection_auroc_max_probability": auroc(correct, baseline)}
        if split == "val_test":
            errors = 1 - correct
            recorder.write_figure(layout.Gate.PLOT, risk_coverage_figure(
                {"gate": risk_coverage(scores, errors), "max probability": risk_coverage(baseline, errors)},
                "Risk–coverage on val_test"))
    recorder.write_json(layout.Gate.REPORT, report)
    test = report["val_test"]
    recorder.metrics.update({k: test[k] for k in
                             ("error_detection_auroc_gate", "error_detection_auroc_max_probability", "errors",
                              "n")})
    log_result(STEP, experiment, f"val_test error-detection AUROC {test['error_detection_auroc_gate']:.3f} "
                                 f"(max-probability {test['error_detection_auroc_max_probability']:.3f})")
    return recorder.finish()
