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
from numbers import Real

import numpy as np

from streetvision.errors import StreetvisionError

EPSILON = 1e-6
POLICY_TYPES = ("threshold", "scrc")
SELECTION_SCORES = ("gate", "confidence")


class PolicyError(StreetvisionError, ValueError):
    """A policy value out of its range; the message names the key."""


def _number(policy: dict, key: str, where: str) -> float:
    value = policy.get(key)
    if isinstance(value, bool) or not isinstance(value, Real):
        raise PolicyError(f"{where}: '{key}' must be a number, got {value!r}")
    if not math.isfinite(value):
        raise PolicyError(f"{where}: '{key}' must be finite, got {value!r}")
    return float(value)


def _selection_threshold(value, where: str) -> None:
    """A selection threshold: a score in [0, 1], or infinity (JSON "inf"): abstain on everything."""
    if value == "inf" or (isinstance(value, float) and value == math.inf):
        return
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value <= 1.0:
        raise PolicyError(f"{where}: must be a score in [0, 1] or \"inf\" (abstain on everything), got "
                          f"{value!r}")


def needs_gate(policy: dict) -> bool:
    """A bundle ships the gate exactly when its policy is SCRC scored by the gate (the rule of
    ``steps.bundle_uses_gate`` too, which asks it of the config before any policy exists)."""
    return policy["type"] == "scrc" and policy.get("selection_score") == "gate"


def validate_policy(policy, where: str = "policy.json") -> dict:
    """Every value a decision depends on, checked: the type, threshold in [0, 1], temperature finite and > 0;
    for ``scrc`` the selection score, its threshold(s) and alpha, delta in (0, 1). Returns ``policy``."""
    if not isinstance(policy, dict):
        raise PolicyError(f"{where}: must be a JSON object, got {type(policy).__name__}")
    if policy.get("type") not in POLICY_TYPES:
        raise PolicyError(f"{where}: unknown policy type {policy.get('type')!r} (expected one of "
                          f"{POLICY_TYPES})")
    if not 0.0 <= _number(policy, "threshold", where) <= 1.0:
        raise PolicyError(f"{where}: 'threshold' must lie in [0, 1], got {policy['threshold']!r}")
    if not _number(policy, "temperature", where) > 0.0:
        raise PolicyError(f"{where}: 'temperature' must be > 0, got {policy['temperature']!r}")
    if policy["type"] == "scrc":
        if policy.get("selection_score") not in SELECTION_SCORES:
            raise PolicyError(f"{where}: 'selection_score' must be one of {SELECTION_SCORES}, "
                              f"got {policy.get('selection_score')!r}")
        selection = policy.get("selection_threshold")
        if isinstance(selection, dict):
            if set(selection) != {"positive", "negative"}:
                raise PolicyError(f"{where}: 'selection_threshold' per decision needs exactly the keys "
                                  f"positive and negative, got {sorted(selection)}")
            for key, value in selection.items():
                _selection_threshold(value, f"{where}: 'selection_threshold.{key}'")
        else:
            _selection_threshold(selection, f"{where}: 'selection_threshold'")
        for key in ("alpha", "delta"):
            if not 0.0 < _number(policy, key, where) < 1.0:
                raise PolicyError(f"{where}: '{key}' must lie in (0, 1), got {policy[key]!r}")
    return policy


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
