"""Exact threshold sweep: every metric at every distinct score in O(n log n).

Decision rule everywhere: predict positive iff ``score >= threshold``. Sorting the scores once in
descending order, the cut at the k-th distinct score predicts positive exactly the samples up to the
last one tied with it, so cumulative sums of labels give TP and FP for all cuts at once; no grid.
Ties in MCC are broken toward the *highest* threshold (fewest positive predictions, hence lowest FPR),
comparing MCC values exactly so the choice is deterministic.
"""

from __future__ import annotations

import numpy as np

from streetvision.errors import StreetvisionError
from streetvision.metrics import as_numpy, mcc_from_counts


class ThresholdInputError(StreetvisionError, ValueError):
    """Scores or labels unusable for a sweep; the message says why."""


def _validated(y_true, y_score, where: str) -> tuple[np.ndarray, np.ndarray]:
    y = as_numpy(y_true)
    s = as_numpy(y_score)
    if y.size == 0:
        raise ThresholdInputError(f"{where}: no samples to sweep")
    if y.shape != s.shape:
        raise ThresholdInputError(f"{where}: {y.size} labels but {s.size} scores")
    bad = ~np.isfinite(s)
    if bad.any():
        raise ThresholdInputError(f"{where}: {int(bad.sum())} of {s.size} scores are NaN or infinite")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ThresholdInputError(f"{where}: labels must be 0 or 1")
    if y.min() == y.max():
        raise ThresholdInputError(f"{where}: only class {int(y[0])} present; MCC is undefined for every "
                                  "threshold")
    return y.astype(np.int64), s


def sweep(y_true, y_score, where: str = "sweep") -> dict[str, np.ndarray]:
    """Confusion counts and metrics at every distinct score, thresholds in descending order."""
    y, s = _validated(y_true, y_score, where)
    order = np.argsort(s)[::-1]  # descending; order within ties is irrelevant to the counts
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), s.size - 1]
    tp = np.cumsum(y_sorted)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    positives = int(y.sum())
    negatives = y.size - positives
    fn = positives - tp
    tn = negatives - fp
    return {
        "threshold": s_sorted[last_of_tie],
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "mcc": mcc_from_counts(tp, fp, tn, fn),
        "accuracy": (tp + tn) / y.size,
        "fnr": fn / positives,
        "fpr": fp / negatives,
    }


def select_threshold_max_mcc(y_true, y_score) -> tuple[float, float]:
    """The MCC-optimal threshold (ties -> highest threshold) and its MCC."""
    curve = sweep(y_true, y_score)
    best = int(np.argmax(curve["mcc"]))  # first maximum = highest threshold, as thresholds descend
    return float(curve["threshold"][best]), float(curve["mcc"][best])
