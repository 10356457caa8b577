"""Step ``report``: one summary row per experiment (results/summary.json, summary.md) and the figures
that ``snakemake --report`` collects. Light on purpose: reads the phases' JSON outputs; no torch."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from streetvision import layout
from streetvision.figures import confusion_figure, training_curves_figure
from streetvision.io.manifest import PhaseRecorder
from streetvision.logs import log_result

COLUMNS = ["experiment", "policy", "threshold", "val_test_mcc", "val_test_accuracy", "val_test_natix_reward",
           "val_test_auroc", "val_test_ece", "scrc_coverage", "scrc_selective_risk"]
CONSUMED_STEPS = ("baseline", "thresholds", "scrc", "bundle")


def experiment_row(results: Path, experiment: str) -> dict:
    def step(name):
        return layout.step_dir(results, experiment, name)

    thresholds = layout.thresholds_of(step("thresholds"))
    scrc = layout.scrc_of(step("scrc"))
    policy = layout.read_json(layout.bundle_dir_of(step("bundle")) / "policy.json", "the bundle's policy")
    test = thresholds["val_test_at_threshold"]
    row = {
        "experiment": experiment, "policy": policy["type"], "threshold": thresholds["threshold"],
        "val_test_mcc": test["mcc"], "val_test_accuracy": test["accuracy"], "val_test_natix_reward": test["natix_reward"],
        "val_test_auroc": test["auroc"], "val_test_ece": scrc["calibration_val_test"]["ece_after"],
        "scrc_coverage": scrc["val_test"]["coverage"], "scrc_selective_risk": scrc["val_test"]["selective_risk"],
    }
    for level, metrics in sorted(layout.robustness_of(step("bundle")).items()):
        for key in ("mcc", "accuracy", "natix_reward"):
            row[f"{level}_{key}"] = metrics[key]
    return row


def markdown_table(frame: pd.DataFrame) -> str:
    def fmt(value):
        if value is None or (isinstance(value, float) and value != value):
            return "—"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def run_report(*, results_dir: str | Path, experiments: list[str], workflow_dir: str | None = None) -> Path:
    results = Path(results_dir)
    consumed = [layout.manifest_of(layout.step_dir(results, exp, step)) for exp in experiments for step in CONSUMED_STEPS]
    recorder = PhaseRecorder(results / layout.STEP_DIRS["report"], "report", ",".join(experiments),
                             {"experiments": experiments}, consumes=consumed, workflow_dir=workflow_dir)
    rows = []
    for exp in experiments:
        rows.append(experiment_row(results, exp))
        test = layout.thresholds_of(layout.step_dir(results, exp, "thresholds"))["val_test_at_threshold"]
        recorder.write_figure(layout.Report.figure(exp, "confusion"), confusion_figure(test, f"{exp}: val_test"))
        curves = layout.curves_of(layout.step_dir(results, exp, "baseline"))
        recorder.write_figure(layout.Report.figure(exp, "curves"), training_curves_figure(curves, f"{exp}: phase 1 training"))
    frame = pd.DataFrame(rows)
    recorder.write_json(f"../{layout.Report.SUMMARY_JSON}", {"experiments": rows})
    levels = frame[["experiment"] + [c for c in frame.columns if c.startswith("level_")]]
    recorder.write_text(f"../{layout.Report.SUMMARY_MD}", "# streetvision summary\n\n"
                        "Metrics on val_test at each experiment's shipped threshold; ECE after temperature "
                        "scaling; SCRC coverage and selective risk of the certified selection.\n\n"
                        f"{markdown_table(frame[COLUMNS])}\n\n## val_test through the validator's augmentation levels "
                        "(bundle outputs, rounded at 0.5)\n\n"
                        f"{markdown_table(levels)}\n")
    recorder.metrics.update({"experiments": len(rows)})
    log_result("report", ",".join(experiments), f"{len(rows)} experiment(s) in {results / layout.Report.SUMMARY_MD}")
    return recorder.finish()
