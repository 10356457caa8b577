"""Decision policies and the output mapping validators see.

Validators round the returned probability at 0.5. The bundle therefore maps the calibrated
probability q through a monotone piecewise-linear map that sends the decision threshold t_q to the
0.5 boundary, keeps [0, 1] and the order of images, and never returns exactly 0.5 (where rounding
conventions differ):

    q <  t_q  ->  (0.5 - ε) · q / t_q                   in [0, 0.5 - ε)
    q >= t_q  ->  0.5 + ε + (0.5 - ε) · (q - t_q) / (1 - t_q)   in [0.5 + ε, 1]

so round(output) == 1 exactly when q >= t_q, i.e. when stage 1's probability p >= t (the phase-2
threshold; temperature scaling is monotone, so t_q = sigmoid(logit(t) / T)).
"""

from __future__ import annotations

import math

import numpy as np

EPSILON = 1e-6


def logit(p: float) -> float:
    p = min(max(p, 1e-15), 1 - 1e-15)
    return math.log(p / (1 - p))


def calibrated(logits: np.ndarray, temperature: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64) / temperature))


def remap(q: np.ndarray, threshold: float, decision: np.ndarray) -> np.ndarray:
    """The output map of the module docstring (vectorised).

    The branch follows ``decision`` (computed as p >= t on stage 1's probability), so that floating
    rounding at the boundary can never make round(output) disagree with the decision.
    """
    q = np.asarray(q, dtype=np.float64)
    t = min(max(threshold, 1e-12), 1 - 1e-12)
    low = (0.5 - EPSILON) * np.minimum(q, t) / t
    high = 0.5 + EPSILON + (0.5 - EPSILON) * np.maximum(q - t, 0.0) / (1 - t)
    return np.clip(np.where(decision, high, np.minimum(low, 0.5 - EPSILON)), 0.0, 1.0)


def outputs(logits: np.ndarray, policy: dict) -> dict[str, np.ndarray]:
    """Stage-1 probability, decision, calibrated probability and validator-facing output per logit."""
    logits = np.asarray(logits, dtype=np.float64)
    probability = 1.0 / (1.0 + np.exp(-logits))
    decision = probability >= policy["threshold"]
    q = calibrated(logits, policy["temperature"])
    t_q = float(calibrated(np.array([logit(policy["threshold"])]), policy["temperature"])[0])
    return {"raw_probability": probability, "decision": decision, "calibrated_probability": q,
            "output": remap(q, t_q, decision)}
