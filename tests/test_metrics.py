import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from streetvision.metrics import (
    auprc,
    auroc,
    compute_all_metrics,
    compute_mcc,
    expected_calibration_error,
    natix_reward,
    reward_distribution,
    validator_metrics,
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
    assert compute_all_metrics(torch.tensor(y), torch.tensor(p,
                                                             dtype=torch.bfloat16).float())["tp"] == expected["tp"]


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
    assert "natix_reward" not in m  # the reward is a sequence score: validator_metrics
    assert math.isnan(auroc([0, 0], [0.1, 0.2])) and math.isnan(auprc([0, 0], [0.1, 0.2]))


def test_perfect_and_inverted_classifiers():
    y = np.array([0, 0, 1, 1])
    assert compute_all_metrics(y, [0.1, 0.2, 0.8, 0.9])["mcc"] == 1.0
    inverted = compute_all_metrics(y, [0.9, 0.8, 0.2, 0.1])
    assert inverted["mcc"] == -1.0


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


# --- the validator's reward ---

def sklearn_natix_reward(labels, answers):
    """Independent restatement of the validator's tracker with scikit-learn (cut the window, then drop -1)."""
    labels, answers = list(labels)[-100:], list(answers)[-100:]
    if answers[-1] == -1 or not 0 <= answers[-1] <= 1:
        return 0.0

    def window(n):
        kept = [(y, p) for y, p in zip(labels[-n:], answers[-n:], strict=True) if p != -1]
        if not kept:
            return 0.0, 0.0
        y = np.array([k[0] for k in kept])
        predictions = np.round(np.array([k[1] for k in kept]))
        try:
            mcc = max(0.0, skm.matthews_corrcoef(y, predictions)) if len(np.unique(y)) > 1 else 0.0
            return mcc, skm.accuracy_score(y, predictions)
        except ValueError:  # NaN or inf answers: the validator falls back to empty metrics
            return 0.0, 0.0

    return (0.5 * window(100)[0] + 0.5 * window(10)[1]) ** 3


def test_natix_reward_by_hand():
    # tp = tn = fp = fn = 1: MCC 0, accuracy 1/2
    assert natix_reward([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.6]) == pytest.approx(0.25**3)
    assert natix_reward([0, 1, 0, 1] * 25, [0.1, 0.9, 0.2, 0.8] * 25) == 1.0
    # labels of one class: MCC 0 although every answer is right
    assert natix_reward([1, 1, 1], [0.9, 0.8, 0.7]) == pytest.approx(0.5**3)
    # inverted answers: MCC -1 is floored at 0
    assert natix_reward([0, 1, 0, 1], [0.9, 0.1, 0.9, 0.1]) == 0.0


def test_natix_reward_rounds_half_down():
    # 0.5 rounds to 0: tp 1, fn 1, tn 2 -> MCC 2 / sqrt(12), accuracy 3/4
    assert natix_reward([0, 1, 0, 1], [0.1, 0.9, 0.2,
                                       0.5]) == pytest.approx((0.5 * 2 / 12**0.5 + 0.5 * 0.75) ** 3)
    assert natix_reward([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.5000001]) == 1.0


def test_natix_reward_cuts_windows_before_dropping_missing_answers():
    labels = [0, 1] * 6
    answers = [0.1, 0.1, 0.1, 0.9, 0.1, 0.9, 0.1, 0.9, 0.1, -1, 0.1, 0.9]  # answer 1 wrong, answer 9 missing
    # last 10 = answers 2..11, one missing: 9 right -> accuracy 1 (dropping first would pull in answer 1)
    # MCC over the 11 answered: tp 4, tn 6, fn 1 -> 24 / sqrt(4 * 5 * 6 * 7)
    expected = (0.5 * 24 / (4 * 5 * 6 * 7) ** 0.5 + 0.5) ** 3
    assert natix_reward(labels, answers) == pytest.approx(expected)
    assert natix_reward(labels[:-1] + [1], answers[:-1] + [-1]) == 0.0  # no answer now: 0


def test_natix_reward_keeps_only_the_last_100_answers():
    labels = [0, 1] * 100
    wrong_then_right = [0.9, 0.1] * 50 + [0.1, 0.9] * 50
    assert natix_reward(labels, wrong_then_right) == 1.0
    assert natix_reward(labels[:150], wrong_then_right[:150]) < 1.0


def test_natix_reward_out_of_range_answers():
    assert natix_reward([0, 1, 1], [0.1, 0.9, 1.2]) == 0.0
    assert natix_reward([0, 1, 1], [0.1, 0.9, -0.2]) == 0.0
    # an earlier 1.7 stays in the history and rounds to 2, a class no label has
    assert natix_reward([0, 1, 1, 0], [0.1, 1.7, 0.9, 0.2]) == pytest.approx(
        sklearn_natix_reward([0, 1, 1, 0], [0.1, 1.7, 0.9, 0.2]))
    assert natix_reward([0, 1, 0], [0.1, float("nan"), 0.2]) == 0.0


@pytest.mark.parametrize("seed", range(30))
def test_natix_reward_matches_an_independent_sklearn_computation(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 160))
    labels = rng.integers(0, 2, n)
    answers = np.clip(labels * rng.uniform(0, 0.6) + rng.random(n) * 0.7, 0, 1)
    answers[rng.random(n) < 0.1] = -1
    answers[rng.random(n) < 0.03] = 1.7
    answers[rng.random(n) < 0.05] = 0.5
    assert natix_reward(labels, answers) == pytest.approx(sklearn_natix_reward(labels, answers), abs=1e-12)


def test_natix_reward_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        natix_reward([], [])
    with pytest.raises(ValueError, match="probabilities has 1"):
        natix_reward([0, 1], [0.3])
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        natix_reward([2], [0.3])


def test_reward_distribution_of_perfect_and_constant_miners():
    y = np.array([0] * 30 + [1] * 70)
    perfect = reward_distribution(y, y * 0.8 + 0.1, n_windows=200)
    assert perfect["mean"] == perfect["p10"] == perfect["p90"] == 1.0 and perfect["std"] == 0.0
    # Always "roadwork": MCC 0, accuracy = positives among the last 10 of a 50/50 stream (not 70/30).
    constant = reward_distribution(y, np.full(100, 0.9), n_windows=4000, rng=1)
    positives = np.arange(11)
    expected = np.sum(stats.binom.pmf(positives, 10, 0.5) * (0.5 * positives / 10) ** 3)
    assert constant["mean"] == pytest.approx(expected, abs=4 * constant["std"] / 4000**0.5)
    assert constant["p10"] <= constant["p50"] <= constant["p90"]


def test_reward_distribution_ranks_miners_and_repeats_with_a_seed():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    sharp = np.clip(y + rng.normal(0, 0.3, 500), 0, 1)
    blunt = np.clip(y + rng.normal(0, 0.8, 500), 0, 1)
    assert reward_distribution(y, sharp, n_windows=300)["mean"] > reward_distribution(y, blunt, n_windows=300)["mean"]
    assert reward_distribution(y, blunt, n_windows=50, rng=3) == reward_distribution(y, blunt, n_windows=50, rng=3)
    with pytest.raises(ValueError, match="no images labelled 0"):
        reward_distribution([1, 1], [0.9, 0.8])
    assert reward_distribution([1, 1], [0.9, 0.8], positive_rate=1.0, n_windows=10)["mean"] == 0.5**3


def test_validator_metrics_round_like_validators_and_report_the_reward_spread():
    labels = np.array([0, 1] * 200)
    answers = np.where(labels == 1, 0.9, 0.1)
    answers[:20] = 0.5  # 0.5 rounds down: right for label 0, wrong for label 1
    m = validator_metrics(labels, answers, rng=3, n_windows=300)
    assert m["n"] == 400 and m["accuracy"] == pytest.approx(390 / 400)
    assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(labels, np.round(answers)))
    assert m["natix_reward_p10"] <= m["natix_reward"] <= m["natix_reward_p90"] <= 1.0
    assert m["natix_reward"] == pytest.approx(reward_distribution(labels, answers, n_windows=300,
                                                                  rng=3)["mean"])


def test_validator_metrics_of_a_single_class_domain_are_undefined_not_zero():
    m = validator_metrics([1, 1, 1], [0.9, 0.8, 0.2])
    assert m["mcc"] is None and m["natix_reward"] is None and m["undefined_reason"] == "only label 1 present"
    assert m["accuracy"] == pytest.approx(2 / 3)


def test_rolling_rewards_are_natix_reward_after_every_challenge():
    from streetvision.metrics import draw_histories, rolling_rewards

    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 300)
    answers = np.clip(labels * 0.6 + rng.normal(0.2, 0.3, 300), 0, 1)
    answers[:5] = 0.5  # exact halves round down, as the validator's np.round does
    history_labels, history_answers = draw_histories(labels, answers, n=4, length=230, rng=2)
    fast = rolling_rewards(history_labels, history_answers)
    slow = np.array([[natix_reward(history_labels[h, :t + 1], history_answers[h, :t + 1]) for t in range(230)]
                     for h in range(4)])
    assert np.allclose(fast, slow, atol=1e-12)


def test_the_validators_moving_average_settles_near_the_mean_reward():
    from streetvision.metrics import ema_score_distribution, reward_distribution

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 500)
    answers = np.where(rng.random(500) < 0.85, labels, 1 - labels).astype(float)  # 85% right
    ema = ema_score_distribution(labels, answers, n_histories=100, length=1500, rng=1)
    reward = reward_distribution(labels, answers, n_windows=400, rng=1)
    assert abs(ema["mean"] - reward["mean"]) < 0.02  # the average forgets its zero start after ~100 challenges
    assert ema["p90"] - ema["p10"] < reward["p90"] - reward["p10"]  # smoother than one reward
    assert ema_score_distribution(labels, answers, n_histories=20, length=10, rng=1)["mean"] < 0.6 * ema["mean"]


def test_the_vectorised_final_reward_is_the_validators_reward_of_each_history():
    from streetvision.metrics import final_rewards

    rng = np.random.default_rng(0)
    labels = (rng.random((300, 100)) < 0.5).astype(int)
    answers = np.where(rng.random((300, 100)) < 0.8, labels, 1 - labels) * rng.choice([0.5, 0.7, 1.0], (300, 100))
    answers[:5] = 0.5  # exactly 0.5 rounds to 0, as np.round does upstream
    expected = [natix_reward(y, p) for y, p in zip(labels, answers, strict=True)]
    assert final_rewards(labels, answers) == pytest.approx(expected, abs=1e-12)
    assert final_rewards(labels[:, :7], answers[:, :7]) == pytest.approx(
        [natix_reward(y, p) for y, p in zip(labels[:, :7], answers[:, :7], strict=True)], abs=1e-12)
