"""Selective risk control with finite-sample guarantees (see docs/scrc.md for the exact statement).

``fit_selection_threshold`` (the high-probability version, "SCRC" in this project):
accept an image iff its score >= λ. For each λ in a grid fixed before seeing data (``grid_size``
evenly spaced points on [0, 1]), the accepted calibration samples' errors are, given how many were
accepted (n_λ), i.i.d. Bernoulli(R(λ)) with R(λ) = P(error | score >= λ). The binomial tail
p_λ = P(Binomial(n_λ, α) <= k_λ) is therefore a valid p-value for H_λ: R(λ) > α. Learn-then-Test with
Bonferroni rejects H_λ when p_λ <= δ / m (m = grid size) and returns the smallest rejected λ (largest
coverage). Then P(R(λ̂) > α) <= δ over the draw of the calibration set. If nothing is rejected the
answer is ``math.inf``: abstain on everything, which is trivially valid.

``conformal_risk_control`` (expected-risk version, Angelopoulos et al. 2022): with the loss
L_i(λ) = error_i · 1[score_i >= λ] (bounded by B = 1, non-increasing in λ),
λ̂ = inf{λ : n/(n+1) · R̂_n(λ) + B/(n+1) <= α} gives E[L_{n+1}(λ̂)] <= α, i.e. the probability that a
new image is both accepted and wrong is at most α in expectation.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom

from streetvision.errors import StreetvisionError

DEFAULT_GRID_SIZE = 100


class CalibrationSizeError(StreetvisionError, ValueError):
    """Too few calibration samples to certify anything at (alpha, delta)."""


def threshold_grid(grid_size: int = DEFAULT_GRID_SIZE) -> np.ndarray:
    """Candidate thresholds fixed in advance: (1/m, 2/m, ..., 1); data never choose the grid."""
    return np.arange(1, grid_size + 1) / grid_size


def minimum_calibration_size(alpha: float, delta: float, grid_size: int = DEFAULT_GRID_SIZE) -> int:
    """Samples needed to certify even a threshold with zero errors: (1-α)^n <= δ/m."""
    return math.ceil(math.log(delta / grid_size) / math.log(1.0 - alpha))


def _validate(scores, errors, alpha: float, delta: float, where: str) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    if s.shape != e.shape:
        raise ValueError(f"{where}: {s.size} scores but {e.size} error indicators")
    if not np.isfinite(s).all():
        raise ValueError(f"{where}: {int((~np.isfinite(s)).sum())} scores are NaN or infinite")
    if s.size and (s.min() < 0 or s.max() > 1):
        raise ValueError(f"{where}: scores must lie in [0, 1] (the threshold grid is fixed on [0, 1])")
    if not np.isin(e, (0.0, 1.0)).all():
        raise ValueError(f"{where}: errors must be 0 or 1")
    if not (0 < alpha < 1 and 0 < delta < 1):
        raise ValueError(f"{where}: alpha and delta must lie in (0, 1), got {alpha}, {delta}")
    return s, e


def selective_counts(scores: np.ndarray, errors: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(accepted, errors among accepted) at each grid threshold, via one sort."""
    order = np.argsort(scores)
    sorted_scores = scores[order]
    errors_from_top = np.r_[np.cumsum(errors[order][::-1])[::-1], 0.0]
    first_accepted = np.searchsorted(sorted_scores, grid, side="left")
    return scores.size - first_accepted, errors_from_top[first_accepted]


def binomial_p_values(accepted: np.ndarray, errors: np.ndarray, alpha: float) -> np.ndarray:
    """p-values of H: selective risk > alpha; 1 where nothing is accepted."""
    p = binom.cdf(errors, accepted, alpha)
    return np.where(accepted > 0, p, 1.0)


def fit_selection_threshold(scores, errors, alpha: float, delta: float, grid_size: int = DEFAULT_GRID_SIZE,
                            where: str = "calibration") -> float:
    """Smallest λ on the fixed grid with P(selective risk of 'score >= λ' > α) <= δ; inf = abstain on all."""
    s, e = _validate(scores, errors, alpha, delta, where)
    needed = minimum_calibration_size(alpha, delta, grid_size)
    if s.size < needed:
        raise CalibrationSizeError(
            f"{where}: SCRC needs at least {needed} calibration samples for alpha={alpha}, delta={delta} "
            f"({grid_size} thresholds); got {s.size}. Enlarge the split or relax alpha/delta.")
    grid = threshold_grid(grid_size)
    accepted, wrong = selective_counts(s, e, grid)
    certified = binomial_p_values(accepted, wrong, alpha) <= delta / grid_size
    return float(grid[np.argmax(certified)]) if certified.any() else math.inf


def risk_upper_bound(accepted: int, errors: int, confidence: float) -> float:
    """One-sided Clopper–Pearson upper bound on a binomial rate at the given confidence."""
    if accepted == 0:
        return 1.0
    if errors >= accepted:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(confidence, errors + 1, accepted - errors))


def conformal_risk_control(scores, errors, alpha: float, bound: float = 1.0, where: str = "calibration") -> float:
    """CRC threshold: smallest λ (over the calibration scores and +inf) with n/(n+1)·R̂(λ) + B/(n+1) <= α."""
    s, e = _validate(scores, errors, alpha, 0.5, where)
    n = s.size
    if bound / (n + 1) > alpha:
        raise CalibrationSizeError(f"{where}: CRC needs n >= {math.ceil(bound / alpha - 1)} samples for alpha={alpha}; got {n}")
    candidates = np.r_[np.unique(s), math.inf]  # R̂ only changes at observed scores
    order = np.argsort(s)
    errors_from_top = np.r_[np.cumsum(e[order][::-1])[::-1], 0.0]
    empirical_risk = errors_from_top[np.searchsorted(s[order], candidates, side="left")] / n
    feasible = n / (n + 1) * empirical_risk + bound / (n + 1) <= alpha
    return float(candidates[np.argmax(feasible)])  # the last candidate (inf) is always feasible
