"""The one place metrics are computed.

Conventions (shared by every phase, the bundle and the report):
- a prediction is positive iff ``probability >= threshold`` (validators round at 0.5);
- MCC is 0 when any confusion-matrix margin is empty (one class present), as the validator does;
- ratios with an empty denominator (precision with no positive prediction, ...) are 0.0;
- AUROC and AUPRC need both classes; with one class they are NaN (undefined, not a crash);
- ECE: 15 equal-width right-closed bins over the positive-class probability, sum over bins of
  (bin weight) * |observed positive rate - mean predicted probability|.
Inputs may be lists, numpy arrays or torch tensors.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

ECE_BINS = 15


def as_numpy(values: Any, dtype=np.float64) -> np.ndarray:
    """Flatten lists, numpy arrays and torch tensors (without importing torch) to a 1-D array."""
    if hasattr(values, "detach"):
        values = values.detach().cpu()
        values = (values.double() if values.is_floating_point() else values).numpy()
    return np.asarray(values, dtype=dtype).reshape(-1)


def binary_labels(y_true: Any) -> np.ndarray:
    """0/1 labels as int64; anything else is an error naming the values."""
    y = as_numpy(y_true)
    if y.size and not np.isin(y, (0.0, 1.0)).all():
        bad = np.unique(y[~np.isin(y, (0.0, 1.0))])[:5]
        raise ValueError(f"labels must be 0 or 1; found {bad.tolist()}")
    return y.astype(np.int64)


def _safe_div(num: float, den: float) -> float:
    return float(num / den) if den else 0.0


def confusion_counts(y_true: Any, y_pred: Any) -> dict[str, int]:
    y = binary_labels(y_true)
    p = binary_labels(y_pred)
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} entries but y_pred has {p.size}")
    return {
        "tp": int(np.sum((y == 1) & (p == 1))),
        "fp": int(np.sum((y == 0) & (p == 1))),
        "tn": int(np.sum((y == 0) & (p == 0))),
        "fn": int(np.sum((y == 1) & (p == 0))),
    }


def mcc_from_counts(tp, fp, tn, fn):
    """MCC from counts; works elementwise on numpy arrays (used by the threshold sweep)."""
    tp, fp, tn, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, tn, fn))
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        mcc = np.where(denominator > 0, (tp * tn - fp * fn) / np.where(denominator > 0, denominator, 1.0),
                       0.0)
    return mcc if mcc.ndim else float(mcc)


def compute_mcc(y_true: Any, y_pred: Any) -> float:
    c = confusion_counts(y_true, y_pred)
    return float(mcc_from_counts(c["tp"], c["fp"], c["tn"], c["fn"]))


def auroc(y_true: Any, y_score: Any) -> float:
    """Mann-Whitney AUROC with average ranks for ties; NaN with one class."""
    y = binary_labels(y_true)
    s = as_numpy(y_score)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    sorted_scores = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # Average rank over each run of tied scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [s.size]))
    average = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(average, ends - starts)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auprc(y_true: Any, y_score: Any) -> float:
    """Average precision (step-wise, as scikit-learn): sum over thresholds of ΔRecall · Precision."""
    y = binary_labels(y_true)
    s = as_numpy(y_score)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        return math.nan
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), s.size - 1]
    tp = np.cumsum(y_sorted)[last_of_tie]
    predicted = last_of_tie + 1
    precision = tp / predicted
    recall = tp / n_pos
    recall_step = np.diff(np.r_[0.0, recall])
    return float(np.sum(recall_step * precision))


def expected_calibration_error(y_true: Any, y_prob: Any, n_bins: int = ECE_BINS) -> float:
    y = binary_labels(y_true)
    p = as_numpy(y_prob)
    if y.size == 0:
        return math.nan
    # Right-closed bins (lo, hi], the first one [0, hi]: the convention of scikit-learn's calibration_curve.
    bins = np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], p, side="left")
    counts = np.bincount(bins, minlength=n_bins)
    sum_p = np.bincount(bins, weights=p, minlength=n_bins)
    sum_y = np.bincount(bins, weights=y, minlength=n_bins)
    filled = counts > 0
    gap = np.abs(sum_y[filled] - sum_p[filled])  # = count * |mean(y) - mean(p)|
    return float(gap.sum() / y.size)


def brier_score(y_true: Any, y_prob: Any) -> float:
    y = binary_labels(y_true)
    p = as_numpy(y_prob)
    return float(np.mean((p - y) ** 2)) if y.size else math.nan


def threshold_metrics(tp, fp, tn, fn) -> dict[str, float]:
    """Every count-based metric from one confusion matrix."""
    total = tp + fp + tn + fn
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn)
    specificity = _safe_div(tn, tn + fp)
    mcc = float(mcc_from_counts(tp, fp, tn, fn))
    accuracy = _safe_div(tp + tn, total)
    return {
        "mcc": mcc,
        "accuracy": accuracy,
        "balanced_accuracy": (recall + specificity) / 2.0,
        "precision": precision,
        "recall": recall,
        "f1": _safe_div(2 * precision * recall, precision + recall),
        "fnr": _safe_div(fn, fn + tp),
        "fpr": _safe_div(fp, fp + tn),
    }


def compute_all_metrics(y_true: Any, y_prob: Any, threshold: float = 0.5) -> dict[str, float]:
    """All metrics for probabilities ``y_prob`` with decisions ``y_prob >= threshold``."""
    y = binary_labels(y_true)
    p = as_numpy(y_prob)
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} entries but y_prob has {p.size}")
    if not np.isfinite(p).all():
        raise ValueError(f"{int((~np.isfinite(p)).sum())} probabilities are NaN or infinite")
    counts = confusion_counts(y, (p >= threshold).astype(np.int64))
    return {
        **counts,
        "n": int(y.size),
        "threshold": float(threshold),
        **threshold_metrics(**counts),
        "auroc": auroc(y, p),
        "auprc": auprc(y, p),
        "ece": expected_calibration_error(y, p),
        "brier": brier_score(y, p),
    }


# --- the validator's reward (natix/validator/reward.py, natix/validator/miner_performance_tracker.py) ---

NATIX_HISTORY = 100  # answers a validator keeps per miner (and the MCC window)
NATIX_ACCURACY_WINDOW = 10
NATIX_REWARD_EXPONENT = 3.0  # config.REWARD_CURVE_EXPONENT
NO_ANSWER = -1.0  # what a validator records when a miner fails to answer
VALIDATOR_SCORE_ALPHA = 0.05  # the moving average of rewards a validator keeps (neuron.moving_average_alpha)


def _multiclass_mcc(y: np.ndarray, p: np.ndarray) -> float:
    """Gorodkin's MCC over the classes present (rounded out-of-range answers make more than two)."""
    classes, codes = np.unique(np.concatenate([y, p]), return_inverse=True)
    confusion = np.zeros((classes.size, classes.size))
    np.add.at(confusion, (codes[: y.size], codes[y.size:]), 1)
    true_counts, predicted_counts = confusion.sum(axis=1), confusion.sum(axis=0)
    n = float(y.size)
    covariance = np.trace(confusion) * n - true_counts @ predicted_counts
    spread = (n * n - true_counts @ true_counts) * (n * n - predicted_counts @ predicted_counts)
    return float(covariance / math.sqrt(spread)) if spread > 0 else 0.0


def _natix_window(labels: np.ndarray, answers: np.ndarray) -> tuple[float, float]:
    """(max(0, MCC), accuracy) of one window as the validator computes them, -1 answers already cut."""
    answered = answers != NO_ANSWER
    y, p = labels[answered], answers[answered]
    if y.size == 0 or not np.isfinite(p).all():  # scikit-learn raises on NaN/inf; the validator scores 0
        return 0.0, 0.0
    decisions = np.round(p)  # half to even: 0.5 -> 0
    accuracy = float(np.mean(decisions == y))
    mcc = max(0.0, _multiclass_mcc(y, decisions)) if np.unique(y).size > 1 else 0.0
    return mcc, accuracy


def natix_reward(labels: Any, probabilities: Any, exponent: float = NATIX_REWARD_EXPONENT) -> float:
    """The reward a validator gives for the last of this chronological sequence of answers.

    ``probabilities[i]`` answered a challenge labelled ``labels[i]``; -1 means no answer. As upstream:
    - the validator keeps the last 100 answers; MCC uses all of them, accuracy the last 10; each window is
      cut first and its -1 entries dropped afterwards (so fewer than 10 answers may count);
    - answers are rounded with ``np.round`` (0.5 -> 0; 1.5 -> 2, which matches no label); MCC is 0 when the
      window's labels are one class, and floored at 0; a window holding NaN or inf scores 0 on both;
    - reward = ``(0.5 * MCC + 0.5 * accuracy) ** exponent``, and 0 when the last answer is -1 or outside
      [0, 1] (earlier out-of-range answers stay in the history).
    """
    y = binary_labels(labels)
    p = as_numpy(probabilities)
    if y.size != p.size:
        raise ValueError(f"labels has {y.size} entries but probabilities has {p.size}")
    if y.size == 0:
        raise ValueError("labels and probabilities are empty: no answer to reward")
    last = p[-1]
    if last == NO_ANSWER or last < 0.0 or last > 1.0:
        return 0.0
    y, p = y[-NATIX_HISTORY:], p[-NATIX_HISTORY:]
    mcc, _ = _natix_window(y, p)
    _, accuracy = _natix_window(y[-NATIX_ACCURACY_WINDOW:], p[-NATIX_ACCURACY_WINDOW:])
    return float((0.5 * mcc + 0.5 * accuracy) ** exponent)


def draw_histories(labels: Any, probabilities: Any, *, n: int, length: int, rng: Any = 0,
                   positive_rate: float = 0.5, domains: Any = None,
                   domain_weights: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` chronological histories of ``length`` validator challenges answered with these scored answers:
    (labels, answers), each of shape (n, length).

    Each challenge draws its label like the validator (positive with ``positive_rate``, 0.5 upstream), then an
    image of that class from the evaluation set (with replacement). With ``domains`` (one per image) and
    ``domain_weights``, each challenge first draws its domain with those weights (validators: 0.5 real / 0.5
    synthetic), then its label, then an image of that domain and class.
    """
    y = binary_labels(labels)
    p = as_numpy(probabilities)
    if y.size != p.size:
        raise ValueError(f"labels has {y.size} entries but probabilities has {p.size}")
    if not 0.0 <= positive_rate <= 1.0:
        raise ValueError(f"positive_rate must be in [0, 1]; got {positive_rate}")
    if n < 1 or length < 1:
        raise ValueError(f"the number and the length of histories must be >= 1; got {n} and {length}")
    d = np.zeros(y.size, dtype=np.int64) if domains is None else np.unique(np.asarray(domains),
                                                                           return_inverse=True)[1]
    names = ["all"] if domains is None else sorted(set(np.asarray(domains).tolist()))
    weights = np.ones(1) if domains is None else np.array([(domain_weights or {}).get(n, 0.0) for n in names])
    if domains is not None and (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"domain_weights {domain_weights} give no domain of {names} a positive weight")
    weights = weights / weights.sum()
    pools = {}
    for k, name in enumerate(names):
        for label, needed in ((1, positive_rate > 0), (0, positive_rate < 1)):
            pools[k, label] = p[(d == k) & (y == label)]
            if needed and weights[k] > 0 and pools[k, label].size == 0:
                where = "" if domains is None else f" in domain {name!r}"
                raise ValueError(f"the evaluation set has no images labelled {label}{where}, but "
                                 f"positive_rate={positive_rate}")
    generator = np.random.default_rng(rng)
    history_domains = generator.choice(len(names), size=(n, length), p=weights)
    history_labels = (generator.random((n, length)) < positive_rate).astype(np.int64)
    answers = np.empty((n, length))
    for (k, label), scores in pools.items():
        chosen = (history_domains == k) & (history_labels == label)
        if chosen.any():
            answers[chosen] = scores[generator.integers(0, scores.size, int(chosen.sum()))]
    return history_labels, answers


def final_rewards(history_labels: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """``natix_reward`` after the last challenge of each row of histories whose answers all lie in [0, 1],
    vectorised: MCC over the last 100 answers, accuracy over the last 10."""
    y = history_labels[:, -NATIX_HISTORY:]
    decisions = np.round(answers[:, -NATIX_HISTORY:]).astype(np.int64)
    tp, fp, tn, fn = (((y == label) & (decisions == decision)).sum(axis=1)
                      for label, decision in ((1, 1), (0, 1), (0, 0), (1, 0)))
    mcc = np.maximum(np.asarray(mcc_from_counts(tp, fp, tn, fn)), 0.0)
    accuracy = (y[:, -NATIX_ACCURACY_WINDOW:] == decisions[:, -NATIX_ACCURACY_WINDOW:]).mean(axis=1)
    return (0.5 * mcc + 0.5 * accuracy) ** NATIX_REWARD_EXPONENT


def reward_distribution(labels: Any, probabilities: Any, *, n_windows: int = 1000,
                        window: int = NATIX_HISTORY,
                        rng: Any = 0, positive_rate: float = 0.5, exponent: float = NATIX_REWARD_EXPONENT,
                        domains: Any = None, domain_weights: dict | None = None) -> dict[str, float]:
    """The reward a miner with these scored answers would hold after ``window`` validator challenges, over
    ``n_windows`` histories (``draw_histories``): its mean, std, p10, p50 and p90."""
    history_labels, answers = draw_histories(labels, probabilities, n=n_windows, length=window, rng=rng,
                                             positive_rate=positive_rate, domains=domains,
                                             domain_weights=domain_weights)
    if exponent == NATIX_REWARD_EXPONENT and np.isfinite(answers).all() and (answers >= 0).all() \
            and (answers <= 1).all():
        rewards = final_rewards(history_labels, answers)
    else:  # -1 (no answer), out-of-range or non-finite answers: the validator's rules, one history at a time
        rewards = np.array([natix_reward(y_row, p_row, exponent)
                            for y_row, p_row in zip(history_labels, answers, strict=True)])
    p10, p50, p90 = np.percentile(rewards, [10, 50, 90])
    return {"mean": float(rewards.mean()), "std": float(rewards.std()), "p10": float(p10), "p50": float(p50),
            "p90": float(p90), "n_windows": n_windows, "window": window}


def rolling_rewards(history_labels: np.ndarray, answers: np.ndarray,
                    exponent: float = NATIX_REWARD_EXPONENT) -> np.ndarray:
    """``natix_reward`` after every challenge of each history (answers in [0, 1]: two decision classes),
    vectorised with running confusion counts over the last 100 answers and hits over the last 10."""
    y = np.asarray(history_labels, dtype=np.int64)
    decisions = np.round(np.asarray(answers)).astype(np.int64)

    def window_sums(values: np.ndarray, size: int) -> np.ndarray:
        running = np.concatenate([np.zeros((values.shape[0], 1)), np.cumsum(values, axis=1)], axis=1)
        starts = np.maximum(np.arange(values.shape[1]) + 1 - size, 0)
        return running[:, 1:] - running[:, starts]

    tp, fp, tn, fn = (window_sums((y == label) & (decisions == decision), NATIX_HISTORY)
                      for label, decision in ((1, 1), (0, 1), (0, 0), (1, 0)))
    spread = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    with np.errstate(invalid="ignore", divide="ignore"):
        mcc = np.where(spread > 0, (tp * tn - fp * fn) / np.sqrt(spread), 0.0)
    counted = np.minimum(np.arange(y.shape[1]) + 1, NATIX_ACCURACY_WINDOW)
    accuracy = window_sums(y == decisions, NATIX_ACCURACY_WINDOW) / counted
    return (0.5 * np.maximum(mcc, 0.0) + 0.5 * accuracy) ** exponent


def ema_score_distribution(labels: Any, probabilities: Any, *, n_histories: int = 200, length: int = 2000,
                           alpha: float = VALIDATOR_SCORE_ALPHA, rng: Any = 0, domains: Any = None,
                           domain_weights: dict | None = None) -> dict[str, float]:
    """The score a validator keeps for a miner with these answers after ``length`` challenges: the moving
    average ``score <- alpha * reward + (1 - alpha) * score`` (natix/base/validator.py, alpha 0.05, from 0)
    of the reward after each challenge. Mean, p10 and p90 over ``n_histories`` histories. Validators then
    normalise the scores of all miners into weights (their sum is 1), so only the ranking against other
    miners, not this number alone, decides a miner's share."""
    history_labels, answers = draw_histories(labels, probabilities, n=n_histories, length=length, rng=rng,
                                             domains=domains, domain_weights=domain_weights)
    rewards = rolling_rewards(history_labels, answers)
    score = np.zeros(n_histories)
    for t in range(length):
        score = alpha * rewards[:, t] + (1.0 - alpha) * score
    p10, p90 = np.percentile(score, [10, 90])
    return {"mean": float(score.mean()), "p10": float(p10), "p90": float(p90), "alpha": alpha,
            "length": length, "n_histories": n_histories}


def validator_metrics(labels: Any, answers: Any, *, rng: Any = 0, n_windows: int = 1000, domains: Any = None,
                      domain_weights: dict | None = None) -> dict:
    """How validators would score these answers (what the miner returns; they round at 0.5 with np.round).

    ``mcc``, ``accuracy`` and ``n``, and the NATIX reward after a 100-challenge history drawn with the
    validators' 50/50 label mix: ``natix_reward`` (its mean), ``natix_reward_p10`` and ``natix_reward_p90``
    over ``n_windows`` random histories (``reward_distribution``). With ``domains`` and ``domain_weights``
    the images are mixed as validators mix domains: every image of domain d weighs w_d / n_d in the
    confusion counts behind MCC and accuracy, and each simulated challenge draws its domain with w_d.
    With one class of labels MCC and the reward are undefined: None, with ``undefined_reason``.
    """
    y = binary_labels(labels)
    decisions = np.round(as_numpy(answers)).astype(np.int64)
    if domains is None:
        image_weights = np.ones(y.size)
    else:
        domains = np.asarray(domains)
        counts = {name: int((domains == name).sum()) for name in np.unique(domains)}
        image_weights = np.array([(domain_weights or {}).get(name, 0.0) / counts[name] for name in domains])
    counts = {key: float(image_weights[mask].sum()) for key, mask in (
        ("tp", (y == 1) & (decisions == 1)), ("fp", (y == 0) & (decisions == 1)),
        ("tn", (y == 0) & (decisions == 0)), ("fn", (y == 1) & (decisions == 0)))}
    result = {"n": int(y.size), "accuracy": _safe_div(counts["tp"] + counts["tn"], sum(counts.values()))}
    present = set(np.unique(y[image_weights > 0]).tolist())
    if present != {0, 1}:
        reason = "no images" if not present else f"only label {present.pop()} present"
        return {**result, "mcc": None, "natix_reward": None, "natix_reward_p10": None,
                "natix_reward_p90": None, "undefined_reason": reason}
    try:
        reward = reward_distribution(y, as_numpy(answers), n_windows=n_windows, rng=rng, domains=domains,
                                     domain_weights=domain_weights)
    except ValueError as err:  # a weighted domain lacks a class: its challenges cannot be drawn
        return {**result, "mcc": float(mcc_from_counts(**counts)), "natix_reward": None,
                "natix_reward_p10": None, "natix_reward_p90": None, "undefined_reason": str(err)}
    return {**result, "mcc": float(mcc_from_counts(**counts)), "natix_reward": reward["mean"],
            "natix_reward_p10": reward["p10"], "natix_reward_p90": reward["p90"]}
