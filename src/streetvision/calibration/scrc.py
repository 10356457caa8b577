"""Selective risk control with finite-sample guarantees (docs/scrc.md states them exactly).

An image is accepted iff its selection score s >= λ. For a λ fixed before looking at the calibration split,
the accepted calibration images' errors are, given their number n_λ, i.i.d. Bernoulli(R(λ)) with
R(λ) = P(error | s >= λ), so p_λ = P(Binomial(n_λ, α) <= k_λ) is a valid p-value for H_λ: R(λ) > α.
Learn-then-Test turns p-values of candidates fixed in advance into λ̂ with P(R(λ̂) > α) <= δ; ``method``
says how δ is spent over the candidates:

- ``split_fixed_sequence`` (default when an independent reference split is given): the candidates are the
  reference split's score quantiles at coverages j/G, most conservative first; the start is the candidate
  whose first test is most likely to reject, judged on the reference split alone. From the start, test
  each candidate at level δ and stop at the first non-rejection. No Bonferroni factor, no monotonicity.
- ``fixed_sequence`` (the fallback without a reference): the fixed grid {1, 1 - 1/m, ..., 0}, walked
  downwards by chains from a few starting points fixed in advance, each chain at level δ / (number of chains).
- ``bonferroni``: every point of the grid {1/m, ..., 1} at δ / m (phase 5's original rule).

λ̂ is the smallest rejected threshold (the largest certified coverage), or +inf: abstain on everything.
``fit_per_decision_thresholds`` fits one λ̂ per stage-1 decision (roadwork / none), each at δ/2;
``accepted_mask`` and ``selective_summary`` apply and summarise either kind of policy (phase 5, bundle).

``conformal_risk_control`` is the expected-risk variant (Angelopoulos et al. 2022): with the loss
L_i(λ) = error_i · 1[score_i >= λ] (bounded by B = 1, non-increasing in λ),
λ̂ = inf{λ : n/(n+1) · R̂_n(λ) + B/(n+1) <= α} gives E[L_{n+1}(λ̂)] <= α.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.stats import binom

from streetvision.errors import StreetvisionError

DEFAULT_GRID_SIZE = 100  # the fixed grid of ``bonferroni`` and ``fixed_sequence``
DEFAULT_SEQUENCE_SIZE = 1000  # G, the candidates of ``split_fixed_sequence`` (capped at the reference size)
# Chain starts of ``fixed_sequence``: 1 - 2^-i. Selection scores (gate P(correct), confidence) crowd near 1,
# so the starts crowd there too; a chain walks down for free, so no start is needed below 0.5.
DEFAULT_STARTS = (0.5, 0.75, 0.875, 0.9375, 0.96875)
GROUPS = ("positive", "negative")  # stage 1 calls roadwork / calls none


class CalibrationSizeError(StreetvisionError, ValueError):
    """Too few calibration samples to certify anything at (alpha, delta)."""


@dataclass(frozen=True)
class SelectionFit:
    threshold: float  # accept iff score >= threshold; inf = abstain on everything
    method: str
    test_level: float  # the level each test ran at
    start: float  # split_fixed_sequence: the first candidate tested (nan for the other methods)
    candidates: int  # how many thresholds the method could test


def threshold_grid(grid_size: int = DEFAULT_GRID_SIZE) -> np.ndarray:
    """Candidate thresholds fixed in advance: (1/m, 2/m, ..., 1); data never choose the grid."""
    return np.arange(1, grid_size + 1) / grid_size


def minimum_calibration_size_for(method: str, alpha: float, delta: float, *, grid_size: int | None = None,
                                 starts=DEFAULT_STARTS) -> int:
    """Calibration samples needed before ``method`` can certify anything, (1-α)^n <= its test level."""
    _check_levels(alpha, delta, "minimum_calibration_size_for")
    level = method_of(method).test_level(delta, grid_size or DEFAULT_GRID_SIZE, starts)
    return math.ceil(math.log(level) / math.log(1.0 - alpha))


def _check_levels(alpha: float, delta: float, where: str) -> None:
    for name, value in (("alpha", alpha), ("delta", delta)):
        if not 0 < value < 1:
            raise ValueError(f"{where}: {name} must lie in (0, 1), got {value}")


def _check_scores(scores, label: str) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not np.isfinite(s).all():
        raise ValueError(f"{label}: {int((~np.isfinite(s)).sum())} scores are NaN or infinite")
    if s.size and (s.min() < 0 or s.max() > 1):
        raise ValueError(f"{label}: scores must lie in [0, 1], found [{s.min():.4g}, {s.max():.4g}]")
    return s


def _check_errors(errors, size: int, label: str) -> np.ndarray:
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    if e.size != size:
        raise ValueError(f"{label}: {size} scores but {e.size} error indicators")
    if not np.isin(e, (0.0, 1.0)).all():
        raise ValueError(f"{label}: errors must be 0 or 1")
    return e


def _check_calls(positive_calls, size: int, label: str) -> np.ndarray:
    calls = np.asarray(positive_calls).reshape(-1)
    if calls.size != size:
        raise ValueError(f"{label}: {size} scores but {calls.size} decisions")
    if not np.isin(calls, (0, 1)).all():
        raise ValueError(f"{label}: decisions must be booleans (or 0/1)")
    return calls.astype(bool)


def selective_counts(scores: np.ndarray, errors: np.ndarray,
                     grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(accepted, errors among accepted) at each threshold of ``grid``, via one sort."""
    order = np.argsort(scores)
    sorted_scores = scores[order]
    errors_from_top = np.r_[np.cumsum(errors[order][::-1])[::-1], 0.0]
    first_accepted = np.searchsorted(sorted_scores, grid, side="left")
    return scores.size - first_accepted, errors_from_top[first_accepted]


def binomial_p_values(accepted: np.ndarray, errors: np.ndarray, alpha: float) -> np.ndarray:
    """p-values of H: selective risk > alpha; 1 where nothing is accepted."""
    p = binom.cdf(errors, accepted, alpha)
    return np.where(accepted > 0, p, 1.0)


def reference_sequence(reference_scores: np.ndarray, size: int) -> np.ndarray:
    """Thresholds accepting the top j/size of the reference scores, j = 1..size, then 0 (accept all).

    Most conservative first; repeated thresholds (ties in the reference) are dropped, the order kept.
    """
    ranked = np.sort(reference_scores)[::-1]
    kept = (np.arange(1, size + 1) * ranked.size + size - 1) // size  # ceil(j n / G) top reference images
    thresholds = np.r_[ranked[kept - 1], 0.0]
    return thresholds[np.r_[True, np.diff(thresholds) < 0]]


@lru_cache(maxsize=16)
def _largest_rejected_errors(max_accepted: int, alpha: float, level: float) -> np.ndarray:
    """Largest k with P(Bin(n, α) <= k) <= level for n = 0..max_accepted; -1 where no count is rejected.

    Cached: repeated fits at similar calibration sizes (simulations, per-decision groups) share one table.
    """
    accepted = np.arange(max_accepted + 1)
    k = binom.ppf(level, accepted, alpha)
    table = np.where(binom.cdf(k, accepted, alpha) <= level, k, k - 1)
    table.flags.writeable = False
    return table


def first_test_power(sequence: np.ndarray, reference_scores: np.ndarray, reference_errors: np.ndarray,
                     n_calibration: int, alpha: float, level: float) -> np.ndarray:
    """Estimated probability that a calibration split of ``n_calibration`` rejects each candidate.

    Each candidate accepts about n · (its reference coverage) calibration images; its risk is the Jeffreys
    posterior mean (k + 1/2) / (m + 1) of the reference counts (m accepted, k wrong), which stays off 0
    when the reference saw no error. (A beta-binomial predictive gave the same coverage at n = 5,000 in
    the simulation of docs/scrc.md, at 7x the cost.)
    """
    accepted_ref, errors_ref = selective_counts(reference_scores, reference_errors, sequence)
    expected = np.rint(n_calibration * accepted_ref / reference_scores.size).astype(np.int64)
    table_size = 1 << int(n_calibration).bit_length()  # a power of two > n: nearby sizes share the table
    critical = _largest_rejected_errors(table_size, float(alpha), float(level))[expected]
    power = binom.cdf(critical, expected, (errors_ref + 0.5) / (accepted_ref + 1))
    return np.where(critical >= 0, power, 0.0)


def _last_rejected(rejected: np.ndarray, start: int) -> int:
    """Index of the last candidate a chain starting at ``start`` rejects; start - 1 when it rejects none."""
    failures = np.flatnonzero(~rejected[start:])
    return start + (int(failures[0]) if failures.size else rejected.size - start) - 1


def _chain_starts(grid_size: int, starts) -> np.ndarray:
    """Positions of the chain starts in the descending grid {1, 1 - 1/m, ..., 0}, distinct."""
    starts = np.asarray(starts, dtype=np.float64)
    if starts.size == 0 or not ((starts >= 0) & (starts <= 1)).all():
        raise ValueError(f"starts: need at least one start in [0, 1], got {starts.tolist()}")
    return np.unique(grid_size - np.rint(starts * grid_size).astype(np.int64))


def _split_fixed_sequence(s, e, alpha, delta, *, reference, sequence_size, where, **_) -> SelectionFit:
    r = _check_scores(reference[0], f"{where}: reference_scores")
    r_errors = _check_errors(reference[1], r.size, f"{where}: reference_errors")
    size = min(DEFAULT_SEQUENCE_SIZE, r.size) if sequence_size is None else sequence_size
    if size < 1 or r.size < size:
        raise CalibrationSizeError(
            f"{where}: reference_scores: a split fixed sequence of {size} candidates needs at least "
            f"{max(size, 1)} "
            f"reference images (one per coverage step 1/{size}); got {r.size}. Enlarge the reference split "
            "or lower the sequence size.")
    sequence = reference_sequence(r, size)
    # The most conservative of the most powerful candidates: np.argmax returns the first maximum.
    start = int(np.argmax(first_test_power(sequence, r, r_errors, s.size, alpha, delta)))
    accepted, wrong = selective_counts(s, e, sequence[start:])
    last = start + _last_rejected(binomial_p_values(accepted, wrong, alpha) <= delta, 0)
    threshold = float(sequence[last]) if last >= start else math.inf
    return SelectionFit(threshold, "split_fixed_sequence", delta, float(sequence[start]), sequence.size)


def _multi_start_fixed_sequence(s, e, alpha, delta, *, grid_size, starts, **_) -> SelectionFit:
    grid = np.arange(grid_size, -1, -1) / grid_size  # 1, ..., 0: most conservative first
    positions = _chain_starts(grid_size, starts)
    level = delta / positions.size
    accepted, wrong = selective_counts(s, e, grid)
    rejected = binomial_p_values(accepted, wrong, alpha) <= level
    # Each chain is a fixed-sequence test at δ/k (it may run past the next start); union bound over chains.
    ends = [end for start in positions if (end := _last_rejected(rejected, int(start))) >= start]
    threshold = float(grid[max(ends)]) if ends else math.inf
    return SelectionFit(threshold, "fixed_sequence", level, math.nan, grid.size)


def _bonferroni(s, e, alpha, delta, *, grid_size, **_) -> SelectionFit:
    grid = threshold_grid(grid_size)
    accepted, wrong = selective_counts(s, e, grid)
    certified = binomial_p_values(accepted, wrong, alpha) <= delta / grid_size
    threshold = float(grid[np.argmax(certified)]) if certified.any() else math.inf
    return SelectionFit(threshold, "bonferroni", delta / grid_size, math.nan, grid_size)


@dataclass(frozen=True)
class Method:
    """One way of spending δ over the candidate thresholds (the module docstring)."""

    fit: Callable[..., SelectionFit]
    test_level: Callable[[float, int, tuple], float]  # (delta, grid_size, starts) -> the level of each test
    needs_reference: bool  # an independent split orders the candidates (and picks the start)
    size_argument: str  # what sizes its candidates: sequence_size (G) or grid_size (m)


METHODS = {
    "split_fixed_sequence": Method(_split_fixed_sequence, lambda delta, m, starts: delta, True,
                                   "sequence_size"),
    "fixed_sequence": Method(_multi_start_fixed_sequence,
                             lambda delta, m, starts: delta / len(_chain_starts(m, starts)), False,
                             "grid_size"),
    "bonferroni": Method(_bonferroni, lambda delta, m, starts: delta / m, False, "grid_size"),
}


def method_of(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"method: unknown SCRC method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def _check_sizes(name: str, method: Method, sequence_size, grid_size, where: str) -> None:
    """Each method is sized by its own argument; the other one is refused, naming the right one."""
    given = {"sequence_size": sequence_size, "grid_size": grid_size}
    for argument, value in given.items():
        if value is not None and (int(value) != value or value < 1):
            raise ValueError(f"{where}: {argument} must be a positive integer, got {value}")
        if value is not None and argument != method.size_argument:
            raise ValueError(f"{where}: {argument} does not apply to method {name}; its candidates are sized "
                             f"by {method.size_argument}")


def fit_selection(scores, errors, alpha: float, delta: float, *, reference_scores=None, reference_errors=None,
                  method: str | None = None, sequence_size: int | None = None, grid_size: int | None = None,
                  starts=DEFAULT_STARTS, where: str = "calibration") -> SelectionFit:
    """``fit_selection_threshold`` with the details a phase records (method, test level, start)."""
    _check_levels(alpha, delta, where)
    s = _check_scores(scores, where)
    e = _check_errors(errors, s.size, where)
    name = method or ("fixed_sequence" if reference_scores is None else "split_fixed_sequence")
    chosen = method_of(name)
    _check_sizes(name, chosen, sequence_size, grid_size, where)
    if chosen.needs_reference and (reference_scores is None or reference_errors is None):
        raise ValueError(f"{where}: {name} needs reference_scores and reference_errors "
                         "(an independent split, e.g. val_calib)")
    grid = int(grid_size or DEFAULT_GRID_SIZE)
    needed = minimum_calibration_size_for(name, alpha, delta, grid_size=grid, starts=starts)
    if s.size < needed:
        raise CalibrationSizeError(
            f"{where}: SCRC needs at least {needed} calibration samples for alpha={alpha}, delta={delta} "
            f"(method {name}); got {s.size}. Enlarge the split or relax alpha/delta.")
    return chosen.fit(s, e, alpha, delta, reference=(reference_scores, reference_errors),
                      sequence_size=sequence_size, grid_size=grid, starts=starts, where=where)


def fit_selection_threshold(scores, errors, alpha: float, delta: float, *, reference_scores=None,
                            reference_errors=None, method: str | None = None,
                            sequence_size: int | None = None,
                            grid_size: int | None = None, starts=DEFAULT_STARTS,
                            where: str = "calibration") -> float:
    """λ̂ with P(selective risk of 'score >= λ̂' > α) <= δ over the calibration draw; inf = abstain on all.

    ``reference_*``: an independent split (scores, 0/1 errors) that orders the candidates and picks the
    start; with it the default method is ``split_fixed_sequence``, without it ``fixed_sequence``.
    ``sequence_size``: G, the candidates of ``split_fixed_sequence`` (default min(1000, reference size));
    ``grid_size``: m, the fixed grid of ``fixed_sequence`` and ``bonferroni`` (default 100); each method
    refuses the other's. ``starts``: chain starts of ``fixed_sequence``. ``where`` labels error messages.
    """
    return fit_selection(scores, errors, alpha, delta, reference_scores=reference_scores,
                         reference_errors=reference_errors, method=method, sequence_size=sequence_size,
                         grid_size=grid_size, starts=starts, where=where).threshold


def fit_per_decision_thresholds(scores, errors, positive_calls, alpha: float, delta: float, *,
                                reference_scores=None, reference_errors=None, reference_positive_calls=None,
                                method: str | None = None, sequence_size: int | None = None,
                                grid_size: int | None = None, starts=DEFAULT_STARTS,
                                where: str = "calibration") -> dict[str, SelectionFit]:
    """One threshold for images stage 1 calls positive, one for those it calls negative, each at δ/2.

    P(error rate among accepted positive calls > α) <= δ/2, the same for negative calls, so both hold
    together with probability >= 1 - δ. Returns {"positive": SelectionFit, "negative": SelectionFit}.
    """
    _check_levels(alpha, delta, where)
    s = _check_scores(scores, where)
    e = _check_errors(errors, s.size, where)
    calls = _check_calls(positive_calls, s.size, f"{where}: positive_calls")
    reference = reference_scores is not None
    if reference and (reference_errors is None or reference_positive_calls is None):
        raise ValueError(f"{where}: reference_scores need reference_errors and reference_positive_calls "
                         "to split the reference by stage 1's decision")
    if reference:
        r = _check_scores(reference_scores, f"{where}: reference_scores")
        r_errors = _check_errors(reference_errors, r.size, f"{where}: reference_errors")
        r_calls = _check_calls(reference_positive_calls, r.size, f"{where}: reference_positive_calls")
    fits = {}
    for group, members in zip(GROUPS, (calls, ~calls), strict=True):
        ref_members = (r_calls if group == "positive" else ~r_calls) if reference else None
        fits[group] = fit_selection(
            s[members], e[members], alpha, delta / 2,
            reference_scores=r[ref_members] if reference else None,
            reference_errors=r_errors[ref_members] if reference else None,
            method=method, sequence_size=sequence_size, grid_size=grid_size, starts=starts,
            where=f"{where} ({group} calls)")
    return fits


def accepted_mask(scores, threshold, positive_calls=None) -> np.ndarray:
    """Which images the policy accepts: score >= threshold (inf accepts none).

    ``threshold``: a float (or SelectionFit), or per decision {"positive": λ+, "negative": λ-} (floats,
    "inf" strings as JSON stores them, or the SelectionFits of ``fit_per_decision_thresholds``); the
    per-decision form needs stage 1's decisions as ``positive_calls``.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not isinstance(threshold, Mapping):
        return s >= _as_threshold(threshold)
    if positive_calls is None:
        raise ValueError("positive_calls: per-decision thresholds need stage 1's decisions")
    calls = _check_calls(positive_calls, s.size, "positive_calls")
    return s >= np.where(calls, _as_threshold(threshold["positive"]), _as_threshold(threshold["negative"]))


def _as_threshold(value) -> float:
    return float(value.threshold if isinstance(value, SelectionFit) else value)


def selective_summary(accepted, errors, positive_calls=None) -> dict:
    """Coverage, counts and selective risk (None when nothing is accepted); per call group when given."""
    accepted = np.asarray(accepted, dtype=bool).reshape(-1)
    errors = np.asarray(errors, dtype=np.float64).reshape(-1)

    def summary(members: np.ndarray) -> dict:
        n, n_accepted = int(members.sum()), int((accepted & members).sum())
        wrong = int(errors[accepted & members].sum())
        return {"n": n, "accepted": n_accepted, "errors_accepted": wrong,
                "coverage": n_accepted / n if n else None,
                "selective_risk": wrong / n_accepted if n_accepted else None}

    result = summary(np.ones(accepted.size, dtype=bool))
    if positive_calls is not None:
        calls = _check_calls(positive_calls, accepted.size, "positive_calls")
        result.update({group: summary(members) for group, members in zip(GROUPS, (calls, ~calls),
                                                                         strict=True)})
    return result


def risk_upper_bound(accepted: int, errors: int, confidence: float) -> float:
    """One-sided Clopper–Pearson upper bound on a binomial rate at the given confidence."""
    if accepted == 0:
        return 1.0
    if errors >= accepted:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(confidence, errors + 1, accepted - errors))


def conformal_risk_control(scores, errors, alpha: float, bound: float = 1.0,
                           where: str = "calibration") -> float:
    """CRC threshold: smallest λ (over the calibration scores and +inf) with n/(n+1)·R̂(λ) + B/(n+1) <= α."""
    _check_levels(alpha, 0.5, where)
    s = _check_scores(scores, where)
    e = _check_errors(errors, s.size, where)
    n = s.size
    if bound / (n + 1) > alpha:
        raise CalibrationSizeError(f"{where}: CRC needs n >= {math.ceil(bound / alpha - 1)} samples for "
                                   f"alpha={alpha}; got {n}")
    candidates = np.r_[np.unique(s), math.inf]  # R̂ only changes at observed scores
    order = np.argsort(s)
    errors_from_top = np.r_[np.cumsum(e[order][::-1])[::-1], 0.0]
    empirical_risk = errors_from_top[np.searchsorted(s[order], candidates, side="left")] / n
    feasible = n / (n + 1) * empirical_risk + bound / (n + 1) <= alpha
    return float(candidates[np.argmax(feasible)])  # the last candidate (inf) is always feasible
