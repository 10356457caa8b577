"""Cross-fitted gate scores: every val_calib row is scored by a gate that never saw it."""

import numpy as np
import pytest
import torch

from streetvision.calibration.gate import (
    GateFit,
    cross_fit_folds,
    cross_fitted_gate_scores,
    fit_gate,
    gate_scores,
)

CFG = GateFit(loss="bce", gatekeeper_alpha=0.5, hidden=8, lr=0.01, weight_decay=1e-4, batch_size=64,
              max_epochs=10, patience=5, holdout_fraction=0.2, seed=3)


@pytest.fixture
def one_torch_thread():
    """Tiny MLPs: a second thread only adds contention on the shared 2-core machine (10x slower under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gate_data(n=240, seed=0):
    """Feature 0 flags the rows stage 1 gets wrong, so an in-sample gate is visibly confident about them."""
    rng = np.random.default_rng(seed)
    correct = (rng.random(n) > 0.2).astype(int)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    x[:, 0] += 2.0 * (1 - correct)
    return x, correct


def test_folds_partition_the_rows():
    folds = cross_fit_folds(103, 5, seed=1)
    assert len(folds) == 5 and sorted(np.concatenate(folds).tolist()) == list(range(103))
    assert {len(f) for f in folds} <= {20, 21}
    with pytest.raises(ValueError, match="folds"):
        cross_fit_folds(10, 1, seed=0)


def test_each_row_is_scored_by_the_gate_fitted_without_its_fold(one_torch_thread):
    x, correct = gate_data()
    scores = cross_fitted_gate_scores(x, correct, CFG, folds=3)
    assert scores.shape == (len(x),) and np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
    folds = cross_fit_folds(len(x), 3, CFG.seed)
    for held_out in folds[:1]:  # one manual fold suffices; each costs a gate fit
        others = np.setdiff1d(np.arange(len(x)), held_out)
        gate, _ = fit_gate(x[others], correct[others], CFG)
        np.testing.assert_allclose(scores[held_out], gate_scores(gate, x[held_out]), rtol=0, atol=1e-6)
    # A gate that saw the held-out rows scores them differently (it is the optimistic in-sample score).
    in_sample, _ = fit_gate(x, correct, CFG)
    assert not np.allclose(scores[folds[0]], gate_scores(in_sample, x[folds[0]]), atol=1e-3)
