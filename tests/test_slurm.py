"""The demo pipeline (tiny) as SLURM jobs on a real single-node SLURM started on localhost, phase 1 as two
SLURM tasks (CPU DDP with gloo, as two GPUs would run) requeued mid-epoch; a failing rule retried.

Needs the Debian packages (.ci/slurm/install.sh; .ci/run installs them). Without them the test is
skipped, unless STREETVISION_REQUIRE_SLURM=1 (set by .ci/run), where it fails instead.
"""

import json
import os
import shutil
import subprocess
import time

import pytest
import torch
import yaml
from helpers import BIN, TINY_CONFIG, run_cli

from streetvision.config import deep_merge

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
PHASES = ("data", "phase1_baseline", "phase2_thresholds", "phase3_gate", "phase5_scrc", "phase6_bundle",
          "hf_export")


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
    started = subprocess.run(["timeout", "-k", "10", "180", "bash", str(repo / ".ci/slurm/start.sh")],
                             env=env, capture_output=True, text=True)
    assert started.returncode == 0 and slurm_running(), started.stdout[-2000:] + started.stderr[-2000:]
    yield state
    subprocess.run(["timeout", "-k", "10", "120", "bash", str(repo / ".ci/slurm/stop.sh")], env=env,
                   capture_output=True)


def slurm_snakemake_args(repo, workdir, *extra, timeout=1500, baseline_tasks=1):
    """The shipped profile plus this node's overlay: no GPUs here (phase 1 runs ``baseline_tasks`` CPU tasks,
    as it would run one task per GPU), small memory, fast status checks."""
    return ["timeout", "-k", "20", str(timeout), "snakemake", "-s", str(repo / "Snakefile"), "-d",
            str(workdir),
            "--configfile", str(workdir / "tiny.yaml"), "--workflow-profile", str(repo / "profiles/slurm"),
            "--default-resources", "slurm_partition=debug", "mem_mb=1500", "runtime=30", "cpus_per_task=1",
            "--set-resources", "baseline:gpu=0", f"baseline:tasks={baseline_tasks}",
            "baseline:cpus_per_task=1",
            "baseline:mem_mb=3000", "explora:gpu=0", "explora:cpus_per_task=1", "explora:mem_mb=3000",
            "bundle:mem_mb=3000", "--slurm-init-seconds-before-status-checks", "2", "--jobs", "4", *extra]


def slurm_snakemake(repo, workdir, *extra, timeout=1500, baseline_tasks=1):
    args = slurm_snakemake_args(repo, workdir, *extra, timeout=timeout, baseline_tasks=baseline_tasks)
    return run_cli(*args, timeout=timeout + 60)


def artifact_layout(results):
    layout = {}
    for phase in PHASES:
        manifest = json.loads((results / "demo" / phase / "manifest.json").read_text())
        layout[phase] = sorted(a["path"] for a in manifest["artifacts"])
    return layout


def running_job_of(rule: str) -> str | None:
    """The SLURM job id of the running job of ``rule`` (the executor plugin puts the rule in the comment)."""
    listed = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k"], capture_output=True, text=True,
                            timeout=30).stdout
    ids = [line.split("|")[0] for line in listed.splitlines() if f"rule_{rule}_" in line]
    return ids[0] if ids else None


def early_in_an_epoch(checkpoint) -> bool:
    """A checkpoint saved in the first half of an epoch after the first: a SIGTERM now lands mid-epoch."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not written yet (or being replaced)
        return False
    progress = state["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    epoch, done_here = state["epoch"], progress["current"]["completed"]
    if epoch < 1 or progress["is_last_batch"]:
        return False
    per_epoch = (progress["total"]["completed"] - done_here) // epoch
    return 1 <= done_here <= per_epoch // 2


def requeue_when_mid_epoch(run, phase_dir, rule, timeout=400) -> str:
    """``scontrol requeue`` the running job of ``rule`` once its training has a checkpoint early in an epoch;
    returns the job id.

    Polling alone races the training (a short epoch can pass between two looks), so a promising look is
    confirmed with the job suspended: while it is stopped its checkpoint cannot move on, and the requeue
    lands on exactly the state seen."""
    deadline, job, checkpoint = time.monotonic() + timeout, None, phase_dir / "checkpoints/last.ckpt"
    while True:
        assert run.poll() is None, "the pipeline ended before a mid-epoch requeue: " + run.stdout.read()[-4000:]
        assert time.monotonic() < deadline, "training never wrote a checkpoint early in an epoch"
        job = job or running_job_of(rule)
        if job and early_in_an_epoch(checkpoint):
            assert scontrol("suspend", job), f"could not suspend job {job}"
            if early_in_an_epoch(checkpoint):
                break
            assert scontrol("resume", job), f"could not resume job {job}"
        time.sleep(0.05)
    assert scontrol("requeue", job), f"could not requeue job {job}"
    for _ in range(120):  # SLURM holds a requeued job back (BeginTime; a suspended one, held); start it now
        scontrol("release", job)
        scontrol("update", f"jobid={job}", "StartTime=now")
        if running_job_of(rule) == job:
            break
        time.sleep(0.5)
    return job


def scontrol(*args: str) -> bool:
    return subprocess.run(["scontrol", *args], capture_output=True, timeout=30).returncode == 0


def test_demo_pipeline_on_slurm_with_two_task_training_requeued_mid_epoch(repo, slurm, tmp_path):
    """The pipeline as SLURM jobs through the shipped profile; phase 1 runs as two SLURM tasks (CPU DDP with
    gloo, as two GPUs would) and is requeued mid-run; its outputs match a local run's. Meanwhile a rule that
    fails on SLURM is reported as failed, retried per the profile, and fails its run."""
    epochs = 5
    config = deep_merge(TINY_CONFIG, {"train": {"batch_size": 4, "max_epochs": epochs,
                                                "checkpoint_interval_minutes": 0.002},  # every ~0.1 s
                                      "bundle": {"policy": "scrc"}})  # every phase runs
    slurm_dir, local_dir, broken_dir = tmp_path / "slurm", tmp_path / "local", tmp_path / "broken"
    for workdir in (slurm_dir, local_dir, broken_dir):
        workdir.mkdir()
        (workdir / "tiny.yaml").write_text(yaml.safe_dump(config))
    (broken_dir / "no_shards").mkdir()  # exists (the plan's check passes), holds no data: the ingest job fails
    (broken_dir / "tiny.yaml").write_text(yaml.safe_dump(deep_merge(config, {"data": {
        "source": "natix_parquet", "path": str(broken_dir / "no_shards")}})))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}

    def start(args):
        return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    # All three at once: the SLURM runs mostly wait on status checks.
    local = start(["timeout", "-k", "20", "900", "snakemake", "-s", str(repo / "Snakefile"), "-d",
                   str(local_dir), "--configfile", str(local_dir / "tiny.yaml"), "--cores", "1"])
    broken = start(slurm_snakemake_args(repo, broken_dir, "--until", "data", timeout=900))
    started = time.monotonic()
    run = start(slurm_snakemake_args(repo, slurm_dir, baseline_tasks=2))
    phase1 = slurm_dir / "results/demo/phase1_baseline"
    try:
        requeued = requeue_when_mid_epoch(run, phase1, "baseline")
        output, _ = run.communicate(timeout=1200)
        local_output, _ = local.communicate(timeout=900)
        broken_output, _ = broken.communicate(timeout=900)
    finally:
        for process in (run, local, broken):
            process.kill()
    assert run.returncode == 0, output[-4000:]
    print(f"SLURM pipeline: {time.monotonic() - started:.0f} s")

    # Phase 1 ran as the job's two SLURM tasks, started by srun and wired by Lightning's SLURMEnvironment ...
    manifest = json.loads((phase1 / "manifest.json").read_text())
    assert manifest["device"] == "cpux2" and json.loads((phase1 / "training_done.json").read_text())["world_size"] == 2
    phase1_log = (slurm_dir / "results/demo/logs/phase1_baseline.log").read_text()
    for rank in (0, 1):
        assert f"Initializing distributed: GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in phase1_log, phase1_log[-3000:]
    # ... and, requeued, the same SLURM job started again and resumed inside the epoch it was stopped in.
    assert manifest["slurm_job_id"] == requeued
    metrics = manifest["metrics"]
    per_epoch = metrics["global_step"] // epochs
    assert metrics["global_step"] == epochs * per_epoch and metrics["epochs"] == epochs
    resumed = metrics["resumed_from_step"]
    assert resumed and resumed % per_epoch, f"resumed at step {resumed}: not inside an epoch of {per_epoch} steps"
    assert f"at global step {resumed}" in phase1_log

    job_ids = {phase: json.loads((slurm_dir / "results/demo" / phase / "manifest.json").read_text())["slurm_job_id"]
               for phase in PHASES}
    assert all(job_ids.values()) and len(set(job_ids.values())) == len(PHASES), job_ids
    assert json.loads((slurm_dir / "results/report/manifest.json").read_text())["slurm_job_id"]
    assert run_cli("streetvision", "verify", str(slurm_dir / "results")).returncode == 0
    assert local.returncode == 0, local_output[-3000:]
    assert artifact_layout(slurm_dir / "results") == artifact_layout(local_dir / "results")

    assert broken.returncode != 0
    assert "SLURM status is: 'FAILED'" in broken_output or "status: FAILED" in broken_output, broken_output[-3000:]
    assert broken_output.count("rule ingest:") >= 2, "the failed ingest job was not retried"
    ingest_log = next((broken_dir / "results/logs").glob("ingest_*.log"))
    assert "no parquet shards found" in ingest_log.read_text()
