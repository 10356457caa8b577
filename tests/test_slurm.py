"""The demo pipeline (tiny) as SLURM jobs on a real single-node SLURM started on localhost.

Needs the Debian packages (.ci/slurm/install.sh; .ci/run installs them). Without them the test is
skipped, unless STREETVISION_REQUIRE_SLURM=1 (set by .ci/run), where it fails instead.
"""

import json
import os
import shutil
import subprocess
import time

import pytest
import yaml
from helpers import TINY_CONFIG, run_cli

from streetvision.config import deep_merge

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
PHASES = ("data", "phase1_baseline", "phase2_thresholds", "phase3_gate", "phase5_scrc", "phase6_bundle")


def slurm_running() -> bool:
    return shutil.which("sinfo") is not None and subprocess.run(
        ["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0


@pytest.fixture(scope="module")
def slurm(repo, tmp_path_factory):
    if shutil.which("slurmctld") is None:
        if os.environ.get("STREETVISION_REQUIRE_SLURM") == "1":
            pytest.fail("SLURM is not installed: run .ci/slurm/install.sh (WITH_DBD=1)")
        pytest.skip("SLURM not installed (.ci/slurm/install.sh)")
    if slurm_running():
        yield None
        return
    state = tmp_path_factory.mktemp("slurm-state")
    env = {**os.environ, "WITH_DBD": "1", "SLURM_STATE_DIR": str(state)}
    started = subprocess.run(["timeout", "-k", "10", "180", "bash", str(repo / ".ci/slurm/start.sh")], env=env,
                             capture_output=True, text=True)
    assert started.returncode == 0 and slurm_running(), started.stdout[-2000:] + started.stderr[-2000:]
    yield state
    subprocess.run(["timeout", "-k", "10", "120", "bash", str(repo / ".ci/slurm/stop.sh")], env=env, capture_output=True)


def slurm_snakemake(repo, workdir, *extra, timeout=1500):
    """The shipped profile plus this node's overlay: no GPUs here, small memory, fast status checks."""
    args = ["timeout", "-k", "20", str(timeout), "snakemake", "-s", str(repo / "Snakefile"), "-d", str(workdir),
            "--configfile", str(workdir / "tiny.yaml"), "--workflow-profile", str(repo / "profiles/slurm"),
            "--default-resources", "slurm_partition=debug", "mem_mb=1500", "runtime=30", "cpus_per_task=1",
            "--set-resources", "baseline:gpu=0", "baseline:mem_mb=3000", "explora:gpu=0", "explora:mem_mb=3000",
            "bundle:mem_mb=3000", "--slurm-init-seconds-before-status-checks", "2", "--jobs", "4", *extra]
    return run_cli(*args, timeout=timeout + 60)


def artifact_layout(results):
    layout = {}
    for phase in PHASES:
        manifest = json.loads((results / "demo" / phase / "manifest.json").read_text())
        layout[phase] = sorted(a["path"] for a in manifest["artifacts"])
    return layout


def test_demo_pipeline_runs_as_slurm_jobs_and_failures_are_retried(repo, slurm, tmp_path):
    slurm_dir, local_dir = tmp_path / "slurm", tmp_path / "local"
    for workdir in (slurm_dir, local_dir):
        workdir.mkdir()
        (workdir / "tiny.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    started = time.monotonic()
    done = slurm_snakemake(repo, slurm_dir)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    job_ids = {phase: json.loads((slurm_dir / "results/demo" / phase / "manifest.json").read_text())["slurm_job_id"]
               for phase in PHASES}
    assert all(job_ids.values()) and len(set(job_ids.values())) == len(PHASES), job_ids
    assert json.loads((slurm_dir / "results/report/manifest.json").read_text())["slurm_job_id"]
    assert run_cli("streetvision", "verify", str(slurm_dir / "results")).returncode == 0
    print(f"SLURM pipeline: {time.monotonic() - started:.0f} s")

    local = run_cli("snakemake", "-s", str(repo / "Snakefile"), "-d", str(local_dir), "--configfile",
                    str(local_dir / "tiny.yaml"), "--cores", "2", timeout=900)
    assert local.returncode == 0, local.stderr[-3000:]
    assert artifact_layout(slurm_dir / "results") == artifact_layout(local_dir / "results")

    # A rule that fails on SLURM is reported as failed, retried per the profile, and the run fails.
    failing = deep_merge(TINY_CONFIG, {"scrc": {"alpha": 0.01}})  # val_conformal far too small for it
    (slurm_dir / "tiny.yaml").write_text(yaml.safe_dump(failing))
    failed = slurm_snakemake(repo, slurm_dir, "--until", "scrc")
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "SLURM status is: 'FAILED'" in output or "status: FAILED" in output, output[-3000:]
    assert output.count("rule scrc:") >= 2, "the failed scrc job was not retried"
    assert "SCRC needs at least" in (slurm_dir / "results/demo/logs/phase5_scrc.log").read_text()
    assert (slurm_dir / "results/demo/phase3_gate/manifest.json").exists()  # nothing done before is lost
