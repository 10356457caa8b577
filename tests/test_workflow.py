"""Workflow tests: the real Snakefile, run small in a temporary directory."""

import shutil
import subprocess

import pytest
import yaml
from conftest import run_cli

SMALL = {"experiments": {"demo": {}}, "data": {"synthetic": {"count": 300, "image_size": 64}}}


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(SMALL))
    return tmp_path


def snakemake(repo, workdir, *args, timeout=900):
    return run_cli("snakemake", "-s", str(repo / "Snakefile"), "-d", str(workdir), "--configfile",
                   str(workdir / "small.yaml"), *args, timeout=timeout)


@pytest.mark.slow
def test_data_phase_runs_and_verifies(repo, workdir):
    done = snakemake(repo, workdir, "--cores", "2", "results/demo/data/manifest.json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (workdir / "results/demo/data/index.parquet").is_file()
    assert (workdir / "results/demo/logs/data.log").is_file()
    assert (workdir / "results/demo/benchmarks/data.tsv").is_file()
    verified = run_cli("streetvision", "verify", str(workdir / "results"))
    assert verified.returncode == 0 and "OK: 1 manifest(s)" in verified.stdout
    again = snakemake(repo, workdir, "--cores", "2", "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_dry_run_of_the_full_target(repo, workdir):
    done = snakemake(repo, workdir, "-n", "--quiet", "rules")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "data" in done.stdout + done.stderr


def test_config_error_stops_before_any_job(repo, workdir):
    broken = {**SMALL, "data": {"splits": {"train": 0.9}}}
    (workdir / "small.yaml").write_text(yaml.safe_dump(broken))
    done = snakemake(repo, workdir, "-n")
    assert done.returncode != 0 and "data.splits': ratios must sum to 1" in done.stdout + done.stderr


def test_dag_renders_to_svg(repo, workdir):
    if shutil.which("dot") is None:
        pytest.fail("graphviz 'dot' is not installed: apt-get install graphviz (.ci/run does this)")
    for graph in ("--dag", "--rulegraph"):
        dag = snakemake(repo, workdir, graph)
        assert dag.returncode == 0 and dag.stdout.lstrip().startswith("digraph"), dag.stdout[:200]
        svg = subprocess.run(["dot", "-Tsvg"], input=dag.stdout, capture_output=True, text=True, timeout=60)
        assert svg.returncode == 0 and "<svg" in svg.stdout
