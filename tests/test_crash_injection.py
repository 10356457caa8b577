"""A smaller, seeded version of benchmarks/crash_injection.py: kill the pipeline, recover, count damage."""

import sys

import pytest
from helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from crash_injection import TINY, run_trials  # noqa: E402


@pytest.mark.slow
def test_random_sigkills_leave_no_torn_files_and_no_bad_manifests():
    rows = run_trials(trials=3, seed=11, config_dict=TINY)
    for row in rows:
        assert row["recovered"], row
        assert row["torn"] == [], row
        assert row["bad_manifest_lines"] == [], row
    assert any(row["killed_in"] not in ("finished before the kill", "between jobs") for row in rows), rows
