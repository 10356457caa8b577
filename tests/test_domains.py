"""Several domains: the training mix, the validators' domain-weighted scores, and the challenge plan."""

import numpy as np
import pandas as pd
import pytest
import sklearn.metrics as skm
import torch

from streetvision.domains import domain_weights
from streetvision.errors import StreetvisionError
from streetvision.metrics import validator_metrics
from streetvision.train.sampling import DomainWeightedSampler

DOMAINS = ["real"] * 900 + ["synthetic"] * 100  # unbalanced on purpose


def test_default_weights_are_the_validators_mix_else_uniform():
    assert domain_weights(DOMAINS, None) == {"real": 0.5, "synthetic": 0.5}
    assert domain_weights(["real"] * 5, None) == {"real": 1.0}
    assert domain_weights(["a", "b", "c"], None) == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert domain_weights(DOMAINS, {"real": 3, "synthetic": 1}) == {"real": 0.75, "synthetic": 0.25}
    with pytest.raises(StreetvisionError,
                       match=r"unknown domain\(s\) \['sdxl'\]; the train split has \['real', 'synthetic'\]"):
        domain_weights(DOMAINS, {"sdxl": 1.0})


def test_the_sampler_draws_each_domain_at_its_weight():
    sampler = DomainWeightedSampler(DOMAINS, {"real": 0.5, "synthetic": 0.5}, num_samples=6000, seed=3)
    drawn = np.array(DOMAINS)[list(sampler)]
    assert len(drawn) == 6000 and abs(np.mean(drawn == "synthetic") - 0.5) < 0.02
    sampler.set_epoch(1)
    assert list(sampler) != list(DomainWeightedSampler(DOMAINS, {"real": 0.5, "synthetic": 0.5}, 6000,
                                                       seed=3))


def _rank(rank: int, world: int, port: int, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    sampler = DomainWeightedSampler(DOMAINS, {"real": 0.3, "synthetic": 0.7}, num_samples=6000, seed=1,
                                    rank=dist.get_rank(), world_size=dist.get_world_size())
    drawn = torch.tensor(list(sampler))
    gathered = [torch.empty_like(drawn) for _ in range(world)]
    dist.all_gather(gathered, drawn)
    if rank == 0:
        queue.put([g.tolist() for g in gathered])
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_ddp_ranks_on_gloo_draw_their_own_shares_of_the_mix():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.get_context("spawn")
    queue = context.Queue()
    procs = [context.Process(target=_rank, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    per_rank = queue.get(timeout=120)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert [len(r) for r in per_rank] == [3000, 3000] and per_rank[0] != per_rank[1]
    drawn = np.array(DOMAINS)[per_rank[0] + per_rank[1]]
    assert abs(np.mean(drawn == "synthetic") - 0.7) < 0.02


def test_domain_mixed_scores_weigh_each_domain_as_validators_do():
    rng = np.random.default_rng(0)
    domains = np.array(DOMAINS)
    labels = rng.integers(0, 2, len(domains))
    right = np.where(domains == "real", rng.random(len(domains)) < 0.95, rng.random(len(domains)) < 0.6)
    answers = np.where(right, labels, 1 - labels).astype(float)
    mix = {"real": 0.5, "synthetic": 0.5}
    mixed = validator_metrics(labels, answers, domains=domains, domain_weights=mix, n_windows=200)
    weights = np.where(domains == "real", 0.5 / 900, 0.5 / 100)
    assert mixed["mcc"] == pytest.approx(skm.matthews_corrcoef(labels, answers, sample_weight=weights))
    assert mixed["accuracy"] == pytest.approx(skm.accuracy_score(labels, answers, sample_weight=weights))
    plain = validator_metrics(labels, answers, n_windows=200)
    assert mixed["accuracy"] < plain["accuracy"]  # the weak synthetic half counts for half, not a tenth
    assert mixed["natix_reward"] < plain["natix_reward"]


def test_challenge_plan_replays_the_evaluation_challenge(tmp_path):
    from helpers import photo_like_jpeg

    from streetvision.data.views import EvaluationChallenge, Sample, challenge_plan, challenge_rng

    samples = []
    for i in range(12):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(photo_like_jpeg(i, 320, 240))
        samples.append(Sample(str(path), key=1000 + i, width=320, height=240))
    plan = challenge_plan(samples, seed=7)
    from streetvision.data.challenge import simulate_challenge

    for sample, row in zip(samples, plan.itertuples(index=False), strict=True):
        _, info = simulate_challenge(sample.path, rng=challenge_rng(7, sample.key), exact=True)
        assert row.level == info["level"] and all(getattr(row,
                                                          k) == v for k, v in info["distortions"].items())
    image = EvaluationChallenge(7).image(samples[0])
    assert image.format == "JPEG" and image.size == (224, 224)
    again = EvaluationChallenge(7).image(samples[0])
    assert np.array_equal(np.asarray(image), np.asarray(again))  # the same challenge every time
    assert set(challenge_plan(samples, seed=7, level=3)["level"]) == {3}


def test_the_report_scores_each_domain_and_source_on_both_views_like_sklearn():
    from sklearn.metrics import accuracy_score, matthews_corrcoef

    from streetvision.phases.report import group_scores

    rng = np.random.default_rng(3)
    n = 300
    test = pd.DataFrame({"label": rng.integers(0, 2, n), "domain": rng.choice(["real", "synthetic"], n),
                         "source": rng.choice(["natix", "sdxl"], n)})
    test.loc[test["source"] == "sdxl", "label"] = 1  # a source holding one class
    decisions = pd.Series(np.where(rng.random(n) < 0.8, test["label"], 1 - test["label"]), dtype=float)
    clean_decisions = pd.Series(np.where(rng.random(n) < 0.9, test["label"], 1 - test["label"]), dtype=float)
    by_domain = group_scores(test, decisions, test, clean_decisions, "domain")
    for domain, scores in by_domain.items():
        members = test["domain"] == domain
        assert scores["n"] == members.sum()
        assert scores["mcc"] == pytest.approx(matthews_corrcoef(test["label"][members], decisions[members]))
        assert scores["accuracy"] == pytest.approx(accuracy_score(test["label"][members], decisions[members]))
        assert scores["clean_mcc"] == pytest.approx(matthews_corrcoef(test["label"][members],
                                                                      clean_decisions[members]))
    by_source = group_scores(test, decisions, test, clean_decisions, "source")
    assert by_source["sdxl"]["mcc"] is None and by_source["sdxl"]["mcc_undefined_reason"] == "only label 1 present"
    assert by_source["natix"]["mcc"] is not None
