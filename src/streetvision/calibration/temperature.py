"""Temperature scaling of a binary logit: p = sigmoid(logit / T), T fitted by NLL with L-BFGS."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F


def fit_temperature(logits, labels, max_iter: int = 200) -> float:
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    y = torch.as_tensor(np.asarray(labels, dtype=np.float64))
    if not torch.isfinite(z).all():
        raise ValueError("temperature scaling: logits contain NaN or infinite values")
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)  # T = exp(log_t) > 0
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.exp())


def apply_temperature(logits, temperature: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64) / temperature))


def calibration_metrics(labels, logits, temperature: float) -> dict:
    """ECE and Brier score before (T = 1) and after temperature scaling."""
    from streetvision.metrics import brier_score, expected_calibration_error

    before, after = apply_temperature(logits, 1.0), apply_temperature(logits, temperature)
    return {"ece_before": expected_calibration_error(labels, before), "ece_after": expected_calibration_error(labels, after),
            "brier_before": brier_score(labels, before), "brier_after": brier_score(labels, after)}
