import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from streetvision.metrics import (
    auprc,
    auroc,
    compute_all_metrics,
    compute_mcc,
    expected_calibration_error,
)


def reference(y, p, threshold):
    pred = (p >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    mcc = skm.matthews_corrcoef(y, pred)
    acc = skm.accuracy_score(y, pred)
    return {
        "mcc": mcc,
        "accuracy": acc,
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred) if len(set(y)) > 1 else None,
        "precision": skm.precision_score(y, pred, zero_division=0),
        "recall": skm.recall_score(y, pred, zero_division=0),
        "f1": skm.f1_score(y, pred, zero_division=0),
        "fnr": fn / (fn + tp) if fn + tp else 0.0,
        "fpr": fp / (fp + tn) if fp + tn else 0.0,
        "brier": skm.brier_score_loss(y, p),
        "natix_reward": 0.5 * max(0.0, mcc) + 0.5 * acc,
    }


def sklearn_ece(y, p, bins=15):
    prob_true, prob_pred = calibration_curve(y, p, n_bins=bins, strategy="uniform")
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, bins + 1)[1:-1], p), minlength=bins)
    counts = counts[counts > 0]
    return float(np.sum(counts * np.abs(prob_true - prob_pred)) / len(y))


@pytest.mark.parametrize("seed", range(20))
def test_every_metric_matches_sklearn_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    y = rng.integers(0, 2, n)
    if len(set(y)) < 2:
        y[0], y[1] = 0, 1
    # Rounded scores create ties, the hard case for AUROC/AUPRC.
    p = np.round(np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1), int(rng.integers(1, 4)))
    threshold = float(rng.choice([0.5, 0.3, 0.71]))
    ours = compute_all_metrics(y, p, threshold)
    for key, expected in reference(y, p, threshold).items():
        assert ours[key] == pytest.approx(expected, abs=1e-12), key
    assert ours["auroc"] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert ours["auprc"] == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)
    assert ours["ece"] == pytest.approx(sklearn_ece(y, p), abs=1e-12)


def test_accepts_lists_numpy_and_torch():
    y, p = [0, 1, 1, 0], [0.1, 0.8, 0.4, 0.6]
    expected = compute_all_metrics(np.array(y), np.array(p))
    assert compute_all_metrics(y, p) == expected
    assert compute_all_metrics(torch.tensor(y), torch.tensor(p, dtype=torch.float64)) == expected
    assert compute_all_metrics(torch.tensor(y), torch.tensor(p, dtype=torch.bfloat16).float())["tp"] == expected["tp"]


@pytest.mark.parametrize(
    "y_true, y_pred",
    [([1, 1, 1], [1, 1, 1]), ([0, 0], [0, 0]), ([0, 0, 0], [1, 0, 1]), ([1, 0, 1], [1, 1, 1]), ([0, 1], [0, 0])],
)
def test_degenerate_mcc_is_zero_like_sklearn(y_true, y_pred):
    assert compute_mcc(y_true, y_pred) == skm.matthews_corrcoef(y_true, y_pred) == 0.0


def test_single_class_is_defined_not_a_crash():
    m = compute_all_metrics([1, 1, 1], [0.9, 0.2, 0.7])
    assert m["mcc"] == 0.0 and m["accuracy"] == pytest.approx(2 / 3)
    assert math.isnan(m["auroc"]) and math.isnan(m["auprc"])
    assert m["natix_reward"] == pytest.approx(1 / 3)
    assert math.isnan(auroc([0, 0], [0.1, 0.2])) and math.isnan(auprc([0, 0], [0.1, 0.2]))


def test_perfect_and_inverted_classifiers():
    y = np.array([0, 0, 1, 1])
    assert compute_all_metrics(y, [0.1, 0.2, 0.8, 0.9])["mcc"] == 1.0
    inverted = compute_all_metrics(y, [0.9, 0.8, 0.2, 0.1])
    assert inverted["mcc"] == -1.0 and inverted["natix_reward"] == 0.0


def test_ece_extremes():
    assert expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0
    assert expected_calibration_error([1, 0], [0.0, 1.0]) == 1.0


@pytest.mark.parametrize("bad", [[0, 2], [0.5, 1], [-1, 0]])
def test_labels_other_than_0_1_are_rejected(bad):
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        compute_all_metrics(bad, [0.1, 0.2])


def test_non_finite_probabilities_are_rejected():
    with pytest.raises(ValueError, match="NaN or infinite"):
        compute_all_metrics([0, 1], [0.1, float("nan")])
