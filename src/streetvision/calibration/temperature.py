"""Temperature scaling of a binary logit: p = sigmoid(logit / T), T fitted by NLL.

Plain numpy/scipy (a one-dimensional convex problem in log T), so phase 2 needs no torch.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar

from streetvision.errors import StreetvisionError

LOG_T_BOUNDS = (math.log(1e-2), math.log(1e2))


def fit_temperature(logits, labels) -> float:
    """The T > 0 minimising the mean negative log-likelihood of ``labels`` under sigmoid(logits / T)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if not np.isfinite(z).all():
        raise StreetvisionError("temperature scaling: logits contain NaN or infinite values")
    signed = np.where(y == 1, z, -z)  # NLL = mean softplus(-signed / T)

    def nll(log_t: float) -> float:
        return float(np.mean(np.logaddexp(0.0, -signed / math.exp(log_t))))

    best = minimize_scalar(nll, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-8})
    return float(math.exp(best.x))


def apply_temperature(logits, temperature: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64) / temperature))


def calibration_metrics(labels, logits, temperature: float) -> dict:
    """ECE and Brier score before (T = 1) and after temperature scaling."""
    from streetvision.metrics import brier_score, expected_calibration_error

    before, after = apply_temperature(logits, 1.0), apply_temperature(logits, temperature)
    return {"ece_before": expected_calibration_error(labels, before),
            "ece_after": expected_calibration_error(labels, after),
            "brier_before": brier_score(labels, before), "brier_after": brier_score(labels, after)}
