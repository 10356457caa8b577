import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import matthews_corrcoef

from streetvision.calibration.thresholds import ThresholdInputError, select_threshold_max_mcc, sweep


@pytest.mark.parametrize("seed", range(8))
def test_sweep_matches_sklearn_at_every_distinct_score(seed):
    rng = np.random.default_rng(seed)
    n = 300
    y = rng.integers(0, 2, n)
    scores = np.round(np.clip(0.25 * y + rng.random(n) * 0.75, 0, 1), 2)  # many ties
    curve = sweep(y, scores)
    assert np.all(np.diff(curve["threshold"]) < 0)
    assert set(curve["threshold"]) == set(scores)
    sklearn_mccs = []
    for i, t in enumerate(curve["threshold"]):
        pred = (scores >= t).astype(int)
        tallies = tuple(int(np.sum((pred == p) & (y == label))) for p, label in ((1, 1), (1, 0), (0, 0), (0, 1)))
        assert (curve["tp"][i], curve["fp"][i], curve["tn"][i], curve["fn"][i]) == tallies
        sklearn_mccs.append(matthews_corrcoef(y, pred))
        assert curve["mcc"][i] == pytest.approx(sklearn_mccs[-1], abs=1e-12)
    threshold, mcc = select_threshold_max_mcc(y, scores)
    assert mcc == pytest.approx(max(sklearn_mccs), abs=1e-12)  # the best over every distinct score


def test_ties_go_to_the_highest_threshold():
    # Thresholds 0.8 and 0.6 give the same predictions' MCC here; 0.8 must win.
    y = [1, 0, 1, 0]
    scores = [0.9, 0.8, 0.6, 0.1]
    curve = sweep(y, scores)
    best = curve["mcc"].max()
    tied = curve["threshold"][curve["mcc"] == best]
    assert select_threshold_max_mcc(y, scores)[0] == tied.max()


def test_perfect_separation_picks_the_lowest_positive_score():
    threshold, mcc = select_threshold_max_mcc([0, 0, 1, 1], [0.1, 0.3, 0.7, 0.9])
    assert (threshold, mcc) == (0.7, 1.0)


@pytest.mark.parametrize(
    "y, s, message",
    [
        ([], [], "no samples"),
        ([0, 1], [0.2, float("nan")], "1 of 2 scores are NaN or infinite"),
        ([0, 1], [0.2, float("inf")], "NaN or infinite"),
        ([1, 1], [0.2, 0.3], "only class 1 present"),
        ([0, 2], [0.2, 0.3], "labels must be 0 or 1"),
    ],
)
def test_degenerate_input_is_a_clear_error(y, s, message):
    with pytest.raises(ThresholdInputError, match=message):
        select_threshold_max_mcc(y, s)


LIGHT_STEPS = ("thresholds", "scrc", "report", "data", "synthesize")


def test_light_steps_do_not_import_torch_or_lightning():
    """Phases 2 and 5, the report, the data step and the synthesize gather read tables: a second of work must
    not pay for importing torch (a synthesize shard imports it when it loads its models). One interpreter
    imports them in turn (a second each saved) and names the first step that brings a heavy module in."""
    code = (
        "import importlib, json, sys\n"
        "heavy = ('torch', 'lightning', 'peft', 'timm')\n"
        f"for step in {LIGHT_STEPS!r}:\n"
        "    importlib.import_module(f'streetvision.phases.{step}')\n"
        "    print(json.dumps([step, sorted(m for m in heavy if m in sys.modules)]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imported = [json.loads(line) for line in done.stdout.splitlines()]
    assert [step for step, _ in imported] == list(LIGHT_STEPS)
    first_heavy = next(((step, heavy) for step, heavy in imported if heavy), None)
    assert first_heavy is None, f"phases.{first_heavy[0]} imports {first_heavy[1]}"
