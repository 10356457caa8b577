"""Lint gates that CI enforces through the test command."""

import pytest
from helpers import run_cli


@pytest.mark.slow
def test_snakemake_lint_is_clean(repo):
    done = run_cli("snakemake", "-s", str(repo / "Snakefile"), "--lint", cwd=repo, timeout=120)
    assert done.returncode == 0 and "Congratulations" in done.stdout + done.stderr, done.stdout[-3000:]


def test_snakefmt_check_is_clean(repo):
    done = run_cli("snakefmt", "--check", "Snakefile", "rules", cwd=repo, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_is_clean(repo):
    done = run_cli("ruff", "check", "src", "scripts", "tests", "benchmarks", cwd=repo, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]


def test_no_print_in_snakefiles(repo):
    """print() in a Snakefile corrupts `snakemake --dag | dot`."""
    for path in [repo / "Snakefile", *sorted((repo / "rules").glob("*.smk"))]:
        assert "print(" not in path.read_text(), path
