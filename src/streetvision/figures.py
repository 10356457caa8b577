"""One way to make and save a figure: matplotlib's headless backend, atomic PNG writes, figures closed."""

from __future__ import annotations

from pathlib import Path


def new_figure(figsize: tuple[float, float] = (6, 4), dpi: int = 110):
    """(figure, axes) on the non-interactive Agg backend (jobs have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize, dpi=dpi)


def save_figure(figure, path: str | Path) -> Path:
    """Tight layout, write the PNG atomically, close the figure."""
    import matplotlib.pyplot as plt

    from streetvision.io.atomic import atomic_write_with

    figure.tight_layout()
    try:
        return atomic_write_with(path, lambda tmp: figure.savefig(tmp, format="png"))
    finally:
        plt.close(figure)


def sweep_figure(curve, chosen: float):
    """Phase 2: MCC, accuracy, FPR, FNR against the threshold, with the chosen one marked."""
    fig, ax = new_figure()
    for column in ("mcc", "accuracy", "fpr", "fnr"):
        ax.plot(curve["threshold"], curve[column], label=column.upper() if len(column) < 4 else column)
    ax.axvline(chosen, color="black", linestyle="--", linewidth=1, label=f"chosen {chosen:.4f}")
    ax.axvline(0.5, color="grey", linestyle=":", linewidth=1, label="0.5")
    ax.set_xlabel("threshold on P(roadwork) (val_calib)")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(loc="lower center", ncol=3, fontsize=8)
    ax.set_title("Exact threshold sweep")
    return fig


def risk_coverage_figure(curves: dict, title: str, alpha: float | None = None, points: dict | None = None):
    """Selective risk against coverage, one line per ``name -> (coverage, risk)``; ``points``: marked
    operating points, ``label -> (coverage, risk)`` (e.g. the certified threshold λ̂, an oracle)."""
    fig, ax = new_figure()
    for name, (coverage, risk) in curves.items():
        ax.plot(coverage, risk, label=name)
    if alpha is not None:
        ax.axhline(alpha, color="red", linestyle="--", linewidth=1, label=f"α = {alpha}")
    for (label, (coverage, risk)), marker in zip((points or {}).items(), "o*Ds^v", strict=False):
        ax.plot([coverage], [risk], marker=marker, markersize=9, linestyle="none", label=label)
    ax.set_xlabel("coverage (fraction accepted)")
    ax.set_ylabel("selective risk (error rate among accepted)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def reliability_figure(curves: dict, bins: int = 15):
    """Observed frequency against mean predicted probability per bin, one line per ``name -> (labels, p)``."""
    import numpy as np

    fig, ax = new_figure((5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    edges = np.linspace(0, 1, bins + 1)
    for name, (labels, probs) in curves.items():
        which = np.searchsorted(edges[1:-1], probs, side="left")
        counts = np.bincount(which, minlength=bins)
        filled = counts > 0
        mean_p = np.bincount(which, weights=probs, minlength=bins)[filled] / counts[filled]
        rate = np.bincount(which, weights=labels, minlength=bins)[filled] / counts[filled]
        ax.plot(mean_p, rate, marker="o", label=name)
    ax.set_xlabel("predicted P(roadwork)")
    ax.set_ylabel("observed frequency")
    ax.set_title("Reliability on val_test")
    ax.legend(fontsize=8)
    return fig


def confusion_figure(counts: dict, title: str):
    """2 x 2 confusion matrix from ``{tn, fp, fn, tp}``."""
    import numpy as np

    matrix = np.array([[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]])
    fig, ax = new_figure((3.6, 3.2))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="black")
    ax.set_xticks([0, 1], ["no roadwork", "roadwork"])
    ax.set_yticks([0, 1], ["no roadwork", "roadwork"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return fig


def training_curves_figure(curves, title: str):
    """Train loss, val_select loss and val_select MCC per epoch from Lightning's CSV log."""
    fig, ax = new_figure((6, 3.5))
    for column, label in (("train/loss_epoch", "train loss"), ("val_select/loss", "val_select loss"),
                          ("val_select/mcc", "val_select MCC")):
        if column in curves:
            series = curves[["epoch", column]].dropna()
            ax.plot(series["epoch"], series[column], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig
