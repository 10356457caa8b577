"""Leak-free, growth-stable split assignment.

Each sample's split is a pure function of (seed, content hash): ``u = H(seed, sha256)`` mapped to
[0, 1) picks the split whose cumulative-ratio interval holds ``u``. Consequences:
- duplicates (same bytes) always land in the same split, so no image is in two splits;
- adding images never moves an existing one (its hash and the ratios are unchanged);
- each class is divided by the same ratios independently of the other, so per-split class balance
  matches the data set's in expectation (stratified in distribution; exact counts are recorded in
  the data manifest). Exact per-class quotas would need ranks and would move samples as data grows.
"""

from __future__ import annotations

import hashlib

import numpy as np

from streetvision.errors import StreetvisionError

# The labelled splits, in assignment order (their ratios are data.splits), and each one's role.
SPLIT_NAMES = ("train", "val_select", "val_calib", "val_conformal", "val_test")
TRAIN, VAL_SELECT, VAL_CALIB, VAL_CONFORMAL, VAL_TEST = SPLIT_NAMES

UNLABELED = "unlabeled"


class SplitError(StreetvisionError, ValueError):
    """A split is empty or single-class; the message names it."""


class LeakError(StreetvisionError):
    """The same image (content hash) would sit in two splits."""


def split_unit_interval(sha256_hex: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{sha256_hex}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_split(sha256_hex: str, ratios: dict[str, float], seed: int) -> str:
    u = split_unit_interval(sha256_hex, seed)
    cumulative = 0.0
    for name in SPLIT_NAMES:
        cumulative += ratios[name]
        if u < cumulative:
            return name
    return SPLIT_NAMES[-1]  # guards against the ratios summing to 1 - epsilon


def split_statistics(splits, labels) -> dict[str, dict[str, int]]:
    splits = np.asarray(splits, dtype=object)
    labels = np.asarray(labels, dtype=object)
    stats = {}
    for name in (*SPLIT_NAMES, UNLABELED):
        in_split = splits == name
        positives = int(np.sum(in_split & (labels == 1)))
        stats[name] = {"n": int(in_split.sum()), "positives": positives,
                       "negatives": int(in_split.sum()) - positives}
    return stats


def check_splits_usable(stats: dict[str, dict[str, int]]) -> None:
    """Every labelled split needs both classes, or the phases that use it cannot be fitted."""
    problems = []
    for name in SPLIT_NAMES:
        s = stats[name]
        if s["n"] == 0:
            problems.append(f"split '{name}' is empty")
        elif s["positives"] == 0 or s["negatives"] == 0:
            problems.append(f"split '{name}' is single-class ({s['positives']} positives, {s['negatives']} "
                            "negatives)")
    if problems:
        raise SplitError("; ".join(problems) + ": add data or change data.splits")
