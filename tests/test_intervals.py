"""Bootstrap intervals and paired comparisons (streetvision.intervals) against independent computations."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, matthews_corrcoef

from streetvision.intervals import (
    bootstrap_intervals,
    draw_resamples,
    holm,
    paired_difference,
    resampled_metrics,
)
from streetvision.metrics import natix_reward, validator_metrics


def evaluation_set(n=300, seed=0, sensitivity=0.85, false_positive_rate=0.2):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.5).astype(int)
    domains = np.where(rng.random(n) < 0.6, "real", "synthetic")
    hit = rng.random(n)
    decisions = np.where(labels == 1, hit < sensitivity, hit < false_positive_rate).astype(float)
    return labels, decisions, domains


def test_resampled_scores_are_sklearns_weighted_scores_of_the_resampled_images():
    labels, decisions, domains = evaluation_set()
    mix = {"real": 0.5, "synthetic": 0.5}
    resamples = draw_resamples(labels, domains, mix, n_boot=20, n_histories=0, rng=1)
    scores = resampled_metrics(labels, decisions, resamples)
    for b in range(20):
        picked = resamples.indices[b]
        weights = resamples.image_weights[picked]
        assert scores["mcc"][b] == pytest.approx(matthews_corrcoef(labels[picked], decisions[picked],
                                                                   sample_weight=weights), abs=1e-12)
        assert scores["accuracy"][b] == pytest.approx(accuracy_score(labels[picked], decisions[picked],
                                                                     sample_weight=weights), abs=1e-12)
        for domain in ("real", "synthetic"):  # resampled within each domain: its size never changes
            assert (domains[picked] == domain).sum() == (domains == domain).sum()
    point = validator_metrics(labels, decisions, domains=domains, domain_weights=mix)
    assert point["mcc"] == pytest.approx(matthews_corrcoef(labels, decisions, sample_weight=np.where(
        domains == "real", 0.5 / (domains == "real").sum(), 0.5 / (domains == "synthetic").sum())))


def test_each_resamples_histories_draw_its_own_images_and_score_like_the_validator():
    labels, decisions, domains = evaluation_set(n=120, seed=2)
    resamples = draw_resamples(labels, domains, {"real": 0.5, "synthetic": 0.5}, n_boot=5, n_histories=8,
                               rng=3)
    for b in range(5):
        drawn = resamples.history_images[b]
        assert set(drawn.ravel()) <= set(resamples.indices[b])  # only images of this resample
        assert (labels[drawn] == resamples.history_labels[b]).all()
        rewards = [natix_reward(resamples.history_labels[b, h], decisions[drawn[h]]) for h in range(8)]
        assert resampled_metrics(labels, decisions, resamples)["natix_reward"][b] == pytest.approx(
            np.mean(rewards), abs=1e-12)
    shares = (domains[resamples.history_images] == "real").mean()
    assert 0.45 < shares < 0.55  # domains drawn 50/50, whatever their counts in val_test


def test_intervals_are_seeded_and_bracket_the_value():
    labels, decisions, domains = evaluation_set(n=400, seed=4)
    mix = {"real": 0.5, "synthetic": 0.5}
    first = bootstrap_intervals(labels, decisions, draw_resamples(labels, domains, mix, rng=0))
    assert first == bootstrap_intervals(labels, decisions, draw_resamples(labels, domains, mix, rng=0))
    point = validator_metrics(labels, decisions, domains=domains, domain_weights=mix)
    for metric in ("mcc", "accuracy", "natix_reward"):
        low, high = first[f"{metric}_ci"]
        assert low < point[metric] < high and high - low < 0.25
    low, high = first["mcc_ci"]
    assert 0.06 < high - low < 0.2  # ~4 standard errors of an MCC on 400 images


def test_identical_experiments_differ_by_nothing_and_holm_is_the_textbook_step_down():
    labels, decisions, domains = evaluation_set(n=200, seed=5)
    resamples = draw_resamples(labels, domains, {"real": 0.5, "synthetic": 0.5}, n_boot=200, rng=0)
    same = paired_difference(labels, decisions, decisions, resamples, "mcc")
    assert same == {"ci": [0.0, 0.0], "p_value": 1.0, "tested_difference": 0.0}
    assert holm([0.01, 0.04, None, 0.03]) == [0.03, 0.06, None, 0.06]


@pytest.mark.slow
def test_the_mcc_interval_covers_the_truth_95_percent_of_the_time():
    """1,000 val_test sets of 400 drawn from a known population (MCC 0.6508): the 95 % interval covers it
    within Monte-Carlo error (±1.4 % at two standard errors; 94.6 % when written)."""
    sensitivity, false_positive_rate = 0.85, 0.2
    tp, fn, fp, tn = 0.5 * sensitivity, 0.5 * (1 - sensitivity), 0.5 * false_positive_rate, 0.5 * 0.8
    truth = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    covered = []
    for draw in range(1000):
        labels, decisions, _ = evaluation_set(n=400, seed=10_000 + draw)
        resamples = draw_resamples(labels, n_boot=400, n_histories=0, rng=draw)
        low, high = bootstrap_intervals(labels, decisions, resamples)["mcc_ci"]
        covered.append(low <= truth <= high)
    assert 0.936 <= np.mean(covered) <= 0.964, np.mean(covered)


@pytest.mark.slow
def test_the_paired_comparison_rejects_a_true_null_at_most_5_percent_of_the_time():
    """Two experiments of equal skill, each right or wrong on its own, on the same 400 images: the paired
    randomization test at 5 % (exact in theory) rejects within Monte-Carlo error of 5 % (500 draws: at
    most 7 %, two standard errors)."""
    rejected = []
    for draw in range(500):
        rng = np.random.default_rng(draw)
        labels = (rng.random(400) < 0.5).astype(int)
        domains = np.where(rng.random(400) < 0.5, "real", "synthetic")
        answers = [np.where(rng.random(400) < 0.85, labels, 1 - labels).astype(float) for _ in range(2)]
        resamples = draw_resamples(labels, domains, {"real": 0.5, "synthetic": 0.5}, n_boot=400,
                                   n_histories=0, rng=draw)
        rejected.append(paired_difference(labels, *answers, resamples, "mcc")["p_value"] < 0.05)
    assert np.mean(rejected) <= 0.07, np.mean(rejected)


@pytest.mark.slow
def test_the_report_compares_experiments_on_the_same_images_with_the_best_one():
    import pandas as pd

    from streetvision.phases.report import ValTestBootstrap, comparisons, comparisons_markdown

    rng = np.random.default_rng(6)
    n = 400
    test = pd.DataFrame({"id": [f"{i:04d}" for i in range(n)], "label": (rng.random(n) < 0.5).astype(int),
                         "domain": np.where(rng.random(n) < 0.5, "real", "synthetic")})
    right = {"strong": rng.random(n) < 0.92, "weak": rng.random(n) < 0.75}
    decisions = {name: np.where(hit, test["label"], 1 - test["label"]).astype(float) for name, hit in right.items()}
    decisions["strong_copy"] = decisions["strong"]
    bootstrap = ValTestBootstrap(test)
    mix = {"real": 0.5, "synthetic": 0.5}
    val_select = {"strong": 0.9, "weak": 0.7, "strong_copy": 0.85}  # picks the reference, not val_test
    rows = [{"experiment": name, "val_select_mcc": val_select[name],
             **{k: validator_metrics(test["label"], d, domains=test["domain"],
                                     domain_weights=mix)[k] for k in ("mcc", "natix_reward")}}
            for name, d in decisions.items()]
    tests = {name: test.assign(decision=d) for name, d in decisions.items()}
    found = comparisons(rows, tests, dict.fromkeys(decisions, bootstrap))
    assert {(c["a"], c["b"], c["metric"]) for c in found} == {
        ("strong", other, metric) for other in ("weak", "strong_copy") for metric in ("mcc", "natix_reward")}
    by_pair = {(c["b"], c["metric"]): c for c in found}
    weak = by_pair["weak", "mcc"]
    assert weak["significant"] and weak["ci"][0] > 0 and weak["difference"] > 0.2
    assert weak["p_value"] == 1 / 1001  # no random swap of answers comes near the observed difference
    assert weak["p_value_holm"] == min(1.0, 2 * weak["p_value"])  # the smaller of two p-values: doubled
    copy = by_pair["strong_copy", "mcc"]
    assert copy["difference"] == 0 and copy["p_value"] == 1.0 and not copy["significant"]
    table = comparisons_markdown(found)
    assert "| strong | weak | mcc |" in table and "| no |" in table and "| yes |" in table


def test_replicate_groups_give_mean_and_spread_over_the_seeds():
    from streetvision.phases.report import replicate_groups, replicates_markdown

    rows = [{"experiment": f"demo-s{k}", "mcc": mcc, "accuracy": 0.9, "natix_reward": None}
            for k, mcc in enumerate((0.70, 0.80, 0.75))] + [{"experiment": "other", "mcc": 0.5, "accuracy": 0.7,
                                                             "natix_reward": 0.4}]
    replicates = {f"demo-s{k}": {"of": "demo", "k": k, "of_n": 3} for k in range(3)} | {"other": None}
    (group,) = replicate_groups(rows, replicates)
    assert group["of"] == "demo" and group["n"] == 3 and group["experiments"] == ["demo-s0", "demo-s1", "demo-s2"]
    assert group["mcc"]["mean"] == pytest.approx(0.75) and group["mcc"]["std"] == pytest.approx(0.05)
    assert group["natix_reward"] == {"mean": None, "std": None, "values": []}
    assert rows[0]["replicate_of"] == "demo" and "replicate_of" not in rows[-1]
    assert "| demo | 3 | 0.7500 ± 0.0500 | 0.9000 ± 0.0000 | — |" in replicates_markdown([group])


@pytest.mark.slow
def test_a_sweep_is_ranked_on_val_select_and_compared_with_its_best_point():
    import pandas as pd

    from streetvision.phases.report import ValTestBootstrap, sweep_tables, sweeps_markdown

    rng = np.random.default_rng(7)
    n = 300
    test = pd.DataFrame({"id": [f"{i:04d}" for i in range(n)], "label": (rng.random(n) < 0.5).astype(int),
                         "domain": "real"})
    skill = {"lr-0": 0.80, "lr-1": 0.95, "lr-2": 0.60}
    val_select = {"lr-0": 0.7, "lr-1": 0.6, "lr-2": 0.5}  # val_select prefers lr-0, val_test lr-1
    decisions = {name: np.where(rng.random(n) < p, test["label"], 1 - test["label"]).astype(float)
                 for name, p in skill.items()}
    rows = [{"experiment": name, "val_select_mcc": val_select[name], "mcc_ci": None, "natix_reward_ci": None,
             **{k: validator_metrics(test["label"], d)[k] for k in ("mcc", "natix_reward")}}
            for name, d in decisions.items()]
    sweeps = {name: {"sweep": "lr", "point": k, "values": {"train.lr": 10.0 ** -k}}
              for k, name in enumerate(skill)}
    (table,) = sweep_tables(rows, sweeps, {name: test.assign(decision=d) for name, d in decisions.items()},
                            dict.fromkeys(skill, ValTestBootstrap(test)))
    assert table["ranked_on"].startswith("val_select") and [p["experiment"] for p in table["points"]] == [
        "lr-0", "lr-1", "lr-2"]
    best, better_on_test, worse = table["points"]
    assert best["vs_best"]["mcc"] is None and better_on_test["vs_best"]["mcc"]["difference"] < 0
    assert worse["vs_best"]["mcc"]["significant"]
    markdown = sweeps_markdown([table])
    assert "never on val_test" in markdown and "| 1 | lr-0 | train.lr=1.0 |" in markdown
