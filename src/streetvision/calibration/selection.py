"""Stage 1's decisions and the confidence scores selection builds on (phases 3, 5 and the bundle)."""

from __future__ import annotations

import numpy as np


def stage1_decisions(probabilities, labels, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(decision, correct) per image: roadwork iff probability >= the phase-2 threshold."""
    predicted = (np.asarray(probabilities) >= threshold).astype(int)
    return predicted, (predicted == np.asarray(labels)).astype(int)


def max_probability(probabilities) -> np.ndarray:
    """The baseline trust score: max(p, 1 - p)."""
    p = np.asarray(probabilities, dtype=np.float64)
    return np.maximum(p, 1 - p)


def decision_confidence(calibrated_probabilities, predicted) -> np.ndarray:
    """Calibrated probability of the decision actually taken: q for a roadwork call, 1 - q otherwise."""
    q = np.asarray(calibrated_probabilities, dtype=np.float64)
    return np.where(np.asarray(predicted).astype(bool), q, 1 - q)


def risk_coverage(scores: np.ndarray, errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Selective risk when accepting the k most trusted samples, for every k (coverage k/n)."""
    order = np.argsort(-scores, kind="mergesort")
    cumulative_errors = np.cumsum(errors[order])
    k = np.arange(1, len(scores) + 1)
    return k / len(scores), cumulative_errors / k
