"""The pipeline report: one summary row per experiment, and figures for ``snakemake --report``.

Light on purpose: reads the phases' JSON outputs; matplotlib for figures; no torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from streetvision.io.atomic import atomic_write_json, atomic_write_text, atomic_write_with
from streetvision.io.manifest import MANIFEST_NAME, PhaseRecorder

COLUMNS = ["experiment", "policy", "threshold", "val_test_mcc", "val_test_accuracy", "val_test_natix_reward",
           "val_test_auroc", "val_test_ece", "scrc_coverage", "scrc_selective_risk"]


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def experiment_row(exp_dir: Path) -> dict:
    thresholds = _read(exp_dir / "phase2_thresholds" / "thresholds.json")
    scrc = _read(exp_dir / "phase5_scrc" / "scrc.json")
    robust = _read(exp_dir / "phase6_bundle" / "robustness.json")
    policy = _read(exp_dir / "phase6_bundle" / "bundle" / "policy.json")
    test = thresholds["val_test_at_threshold"]
    row = {
        "experiment": exp_dir.name, "policy": policy["type"], "threshold": thresholds["threshold"],
        "val_test_mcc": test["mcc"], "val_test_accuracy": test["accuracy"], "val_test_natix_reward": test["natix_reward"],
        "val_test_auroc": test["auroc"], "val_test_ece": scrc["calibration_val_test"]["ece_after"],
        "scrc_coverage": scrc["val_test"]["coverage"], "scrc_selective_risk": scrc["val_test"]["selective_risk"],
    }
    for level, metrics in sorted(robust.items()):
        for key in ("mcc", "accuracy", "natix_reward"):
            row[f"{level}_{key}"] = metrics[key]
    return row


def markdown_table(frame: pd.DataFrame) -> str:
    def fmt(value):
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def plot_confusion(exp_dir: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test = _read(exp_dir / "phase2_thresholds" / "thresholds.json")["val_test_at_threshold"]
    matrix = np.array([[test["tn"], test["fp"]], [test["fn"], test["tp"]]])
    fig, ax = plt.subplots(figsize=(3.6, 3.2), dpi=110)
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="black")
    ax.set_xticks([0, 1], ["no roadwork", "roadwork"])
    ax.set_yticks([0, 1], ["no roadwork", "roadwork"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{exp_dir.name}: val_test")
    fig.tight_layout()
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def plot_curves(exp_dir: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = pd.read_csv(exp_dir / "phase1_baseline" / "curves.csv")
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    for column, label in (("train/loss_epoch", "train loss"), ("val_select/loss", "val_select loss"),
                          ("val_select/mcc", "val_select MCC")):
        if column in curves:
            series = curves[["epoch", column]].dropna()
            ax.plot(series["epoch"], series[column], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_title(f"{exp_dir.name}: phase 1 training")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def run_report(results_dir: str | Path, experiments: list[str], workflow_dir: str | None = None) -> Path:
    results = Path(results_dir)
    report_dir = results / "report"
    recorder = PhaseRecorder(report_dir, "report", ",".join(experiments), {"experiments": experiments},
                             workflow_dir=workflow_dir)
    rows = []
    for exp in experiments:
        exp_dir = results / exp
        for phase in ("phase1_baseline", "phase2_thresholds", "phase5_scrc", "phase6_bundle"):
            recorder.consume(exp_dir / phase / MANIFEST_NAME)
        rows.append(experiment_row(exp_dir))
        plot_confusion(exp_dir, recorder.path(f"{exp}/confusion.png"))
        plot_curves(exp_dir, recorder.path(f"{exp}/curves.png"))
        recorder.add_artifact(f"{exp}/confusion.png")
        recorder.add_artifact(f"{exp}/curves.png")
    frame = pd.DataFrame(rows)
    atomic_write_json(results / "summary.json", {"experiments": rows})
    main = frame[COLUMNS]
    levels = frame[["experiment"] + [c for c in frame.columns if c.startswith("level_")]]
    atomic_write_text(results / "summary.md", "# streetvision summary\n\n"
                      "Metrics on val_test at each experiment's shipped threshold; ECE after temperature "
                      "scaling; SCRC coverage and selective risk of the certified selection.\n\n"
                      f"{markdown_table(main)}\n\n## val_test through the validator's augmentation levels "
                      "(bundle outputs, rounded at 0.5)\n\n"
                      f"{markdown_table(levels)}\n")
    recorder.add_artifact("../summary.json")
    recorder.add_artifact("../summary.md")
    recorder.metrics.update({"experiments": len(rows)})
    return recorder.finish()
