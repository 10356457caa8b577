"""Step ``scrc`` (phase 5): selective risk control calibrated on val_conformal's challenge pass.

The selection score is the gate's P(correct) or stage 1's calibrated confidence in its own decision
(temperature from phase 2). ``scrc.method`` certifies the selection threshold (docs/scrc.md); the
default, split fixed-sequence testing, builds its candidates and start from val_calib (cross-fitted gate
scores, so not optimistic) and tests them in order on val_conformal. ``scrc.per_decision`` fits one
threshold for roadwork calls and one for the others, each at delta/2. Decisions never change here: they
are stage 1's at the phase-2 threshold.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from streetvision import layout
from streetvision.calibration.scrc import (
    GROUPS,
    METHODS,
    accepted_mask,
    conformal_risk_control,
    fit_per_decision_thresholds,
    fit_selection,
    minimum_calibration_size_for,
    risk_upper_bound,
    selective_summary,
)
from streetvision.calibration.selection import decision_confidence, risk_coverage, stage1_decisions
from streetvision.calibration.temperature import apply_temperature, calibration_metrics
from streetvision.data.splits import VAL_CALIB, VAL_CONFORMAL, VAL_TEST
from streetvision.errors import StreetvisionError
from streetvision.figures import reliability_figure, risk_coverage_figure
from streetvision.logs import log_result
from streetvision.phases import step_recorder

STEP = "scrc"

log = logging.getLogger(__name__)

SPLITS = (VAL_CALIB, VAL_CONFORMAL, VAL_TEST)  # reference, calibration, report


def selection_scores(table: pd.DataFrame, gate_dir: Path | None, temperature: float, threshold: float,
                     kind: str, split: str) -> np.ndarray:
    """Per image of ``split``: the gate's P(correct), or the calibrated confidence in stage 1's decision."""
    if kind == "gate":
        gate = layout.gate_scores_of(gate_dir, split)
        if gate["id"].tolist() != table["id"].tolist():
            raise StreetvisionError(f"gate scores for split '{split}' are not aligned with phase 1's "
                                    "predictions")
        scores = gate["gate_score"].to_numpy()
    else:
        predicted, _ = stage1_decisions(table["probability"], table["label"], threshold)
        scores = decision_confidence(apply_temperature(table["logit"], temperature), predicted)
    if not np.isfinite(scores).all():
        raise StreetvisionError(f"selection scores of split '{split}' contain NaN or infinite values")
    return scores


def fit_policy(cfg: dict, scores: dict, errors: dict, calls: dict):
    """The certified selection: one SelectionFit, or {"positive": fit, "negative": fit} per decision."""
    kwargs = {"method": cfg["method"], "where": f"val_conformal ({cfg['score']} scores)",
              "sequence_size": cfg["sequence_size"], "grid_size": cfg["grid_size"]}
    if METHODS[cfg["method"]].needs_reference:
        kwargs.update(reference_scores=scores["val_calib"], reference_errors=errors["val_calib"])
        if cfg["per_decision"]:
            kwargs["reference_positive_calls"] = calls["val_calib"]
    if cfg["per_decision"]:
        return fit_per_decision_thresholds(scores["val_conformal"], errors["val_conformal"],
                                           calls["val_conformal"], cfg["alpha"], cfg["delta"], **kwargs)
    return fit_selection(scores["val_conformal"], errors["val_conformal"], cfg["alpha"], cfg["delta"],
                         **kwargs)


def split_summary(table: pd.DataFrame, accepted, errors, calls) -> dict:
    """Coverage and selective risk overall, per decision group and per domain."""
    summary = selective_summary(accepted, errors, calls)
    summary["full_coverage_risk"] = float(np.mean(errors))
    summary["by_domain"] = {domain: selective_summary(accepted[members], errors[members])
                            for domain, members in ((d, (table["domain"] == d).to_numpy())
                                                    for d in sorted(table["domain"].unique()))}
    return summary


def certified_label(test: dict, selection) -> str:
    """The legend of the certified operating point on val_test (λ̂: the selection threshold(s))."""
    if not test["coverage"]:
        return "certified λ̂: nothing accepted (coverage 0)"
    threshold = (", ".join(f"{group} {value:.3f}" for group, value in selection.items())
                 if isinstance(selection, dict) else f"{selection:.3f}")  # per decision: one per call
    return (f"certified λ̂ = {threshold}: coverage {test['coverage']:.2f}, "
            f"risk {test['selective_risk']:.3f}")


def run_scrc(*, cfg: dict, baseline_dir: str | Path, thresholds_dir: str | Path,
             gate_dir: str | Path | None = None,
             out_dir: str | Path, experiment: str, workflow_dir: str | None = None) -> Path:
    scrc_cfg = cfg["scrc"]
    consumed = [baseline_dir, thresholds_dir] + ([gate_dir] if gate_dir else [])
    recorder = step_recorder(STEP, out_dir, experiment, cfg, workflow_dir=workflow_dir,
                             consumes=[layout.manifest_of(d) for d in consumed])
    threshold, temperature = layout.threshold_of(thresholds_dir), layout.temperature_of(thresholds_dir)
    alpha, delta, kind = scrc_cfg["alpha"], scrc_cfg["delta"], scrc_cfg["score"]
    tables, scores, errors, calls = {}, {}, {}, {}
    for split in SPLITS:
        tables[split] = layout.predictions_of(baseline_dir, split)
        scores[split] = selection_scores(tables[split], gate_dir, temperature, threshold, kind, split)
        predicted, correct = stage1_decisions(tables[split]["probability"], tables[split]["label"], threshold)
        errors[split], calls[split] = 1 - correct, predicted.astype(bool)

    fit = fit_policy(scrc_cfg, scores, errors, calls)
    fits = fit if isinstance(fit, dict) else {"all": fit}
    per_group = {group: f.threshold for group, f in fits.items()}
    selection = per_group if scrc_cfg["per_decision"] else fit.threshold
    warnings = [f"no threshold is certified at alpha={alpha}, delta={delta}: the policy abstains on "
                f"{'every image' if group == 'all' else f'every {group} call'}" for group, f in fits.items()
                if math.isinf(f.threshold)]
    for warning in warnings:
        log.warning(warning)
    crc = conformal_risk_control(scores["val_conformal"], errors["val_conformal"], alpha,
                                 where=f"val_conformal ({kind} scores)")

    group_calls = calls if scrc_cfg["per_decision"] else dict.fromkeys(SPLITS)
    result = {
        "alpha": alpha, "delta": delta, "selection_score": kind, "method": scrc_cfg["method"],
        "per_decision": scrc_cfg["per_decision"], "decision_threshold": threshold, "temperature": temperature,
        "selection_threshold": selection, "crc_threshold": crc, "view": "challenge",
        "fits": {group: {"threshold": f.threshold, "method": f.method, "test_level": f.test_level,
                         "start": f.start, "candidates": f.candidates} for group, f in fits.items()},
        "n_val_conformal": len(tables["val_conformal"]),
        "minimum_calibration_size": minimum_calibration_size_for(
            scrc_cfg["method"], alpha, delta / 2 if scrc_cfg["per_decision"] else delta,
            grid_size=scrc_cfg["grid_size"]),
        "guarantee": guarantee_text(alpha, delta, scrc_cfg["per_decision"]),
        "warnings": warnings,
    }
    for split in SPLITS[1:]:
        accepted = accepted_mask(scores[split], selection, calls[split] if scrc_cfg["per_decision"] else None)
        result[split] = split_summary(tables[split], accepted, errors[split], group_calls[split])
        result[split]["crc_joint_risk"] = float(np.mean(errors[split] * (scores[split] >= crc)))
    conformal = result["val_conformal"]
    conformal["risk_upper_bound"] = {}  # Clopper-Pearson at the level each test ran at
    for group, f in fits.items():
        part = conformal if group == "all" else conformal[group]
        conformal["risk_upper_bound"][group] = risk_upper_bound(part["accepted"], part["errors_accepted"],
                                                                1 - f.test_level)
    test = tables["val_test"]
    result["calibration_val_test"] = calibration_metrics(test["label"], test["logit"], temperature)

    labels = test["label"].to_numpy()
    recorder.write_figure(layout.Scrc.RELIABILITY_PLOT, reliability_figure({
        "before (T = 1)": (labels, apply_temperature(test["logit"], 1.0)),
        f"after (T = {temperature:.2f})": (labels, apply_temperature(test["logit"], temperature))}))
    recorder.write_figure(layout.Scrc.RISK_PLOT, risk_coverage_figure(
        {f"{kind} score": risk_coverage(scores["val_test"], errors["val_test"])}, "SCRC on val_test",
        alpha=alpha, points={certified_label(result["val_test"], selection): (
            result["val_test"]["coverage"], result["val_test"]["selective_risk"] or 0.0)}))
    recorder.write_json(layout.Scrc.TEMPERATURE, {"temperature": temperature,
                                                  **result["calibration_val_test"]})
    recorder.write_json(layout.Scrc.RESULT, result)
    recorder.metrics.update({
        "selection_threshold": selection, "method": scrc_cfg["method"], "warnings": warnings,
        "val_test_coverage": result["val_test"]["coverage"],
        "val_test_selective_risk": result["val_test"]["selective_risk"],
        "val_test_by_domain": {d: {k: v[k] for k in ("coverage", "selective_risk")}
                               for d, v in result["val_test"]["by_domain"].items()},
        "val_conformal_coverage": conformal["coverage"],
        "val_conformal_risk_upper_bound": result["val_conformal"]["risk_upper_bound"],
        "ece_val_test_after": result["calibration_val_test"]["ece_after"],
    })
    risk = result["val_test"]["selective_risk"]
    log_result(STEP, experiment, f"val_test coverage {result['val_test']['coverage']:.3f}, selective risk "
                                 f"{'undefined' if risk is None else f'{risk:.4f}'} (alpha {alpha}, "
                                 f"{scrc_cfg['method']})")
    return recorder.finish()


def guarantee_text(alpha: float, delta: float, per_decision: bool) -> str:
    if per_decision:
        return (f"P(error rate among accepted {GROUPS[0]} calls > {alpha}) <= {delta / 2} and the same for "
                f"{GROUPS[1]} calls, over the val_conformal draw")
    return f"P(error rate among accepted > {alpha}) <= {delta} over the val_conformal draw"
