"""Preemption loses minutes, not epochs: interval checkpoints, SIGTERM saves, resume from the newest
readable state, stale state discarded."""

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import REPO, ingest_and_index, resolved_config

from streetvision.train.checkpoints import (
    ResumePoint,
    checkpoint_callbacks,
    checkpoint_step,
    discard_stale_training,
    newest_checkpoint,
)


def fake_checkpoint(path, step):
    torch.save({"state_dict": {"w": torch.zeros(2)}, "loops": {}, "global_step": step, "epoch": 0}, path)
    return path


# ------------------------------------------------------------------ choosing what to resume from


def test_resume_takes_the_highest_global_step_among_last_and_hpc_saves(tmp_path):
    fake_checkpoint(tmp_path / "last.ckpt", 40)
    fake_checkpoint(tmp_path / "hpc_ckpt_1.ckpt", 25)
    fake_checkpoint(tmp_path / "hpc_ckpt_2.ckpt", 57)
    fake_checkpoint(tmp_path / "best.ckpt", 90)  # the best-by-metric file is never a resume point
    assert newest_checkpoint(tmp_path) == ResumePoint(tmp_path / "hpc_ckpt_2.ckpt", 57)
    (tmp_path / "hpc_ckpt_2.ckpt").unlink()
    assert newest_checkpoint(tmp_path) == ResumePoint(tmp_path / "last.ckpt", 40)
    assert newest_checkpoint(tmp_path / "missing") is None


def test_unreadable_checkpoints_are_skipped_with_a_warning_and_removed(tmp_path, caplog):
    fake_checkpoint(tmp_path / "hpc_ckpt_1.ckpt", 12)
    good = (tmp_path / "hpc_ckpt_1.ckpt").read_bytes()
    (tmp_path / "last.ckpt").write_bytes(good[: len(good) // 2])  # torn
    torch.save({"global_step": 99}, tmp_path / "hpc_ckpt_2.ckpt")  # not a training checkpoint
    with caplog.at_level(logging.WARNING):
        assert newest_checkpoint(tmp_path) == ResumePoint(tmp_path / "hpc_ckpt_1.ckpt", 12)
    warned = caplog.text
    assert "last.ckpt is unreadable" in warned and "hpc_ckpt_2.ckpt is unreadable" in warned
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hpc_ckpt_1.ckpt"]  # no crash loop on them later
    (tmp_path / "hpc_ckpt_1.ckpt").write_bytes(b"garbage")
    assert newest_checkpoint(tmp_path) is None  # nothing valid left: from scratch
    torch.save([1, 2], tmp_path / "list.ckpt")
    with pytest.raises(ValueError, match="not a Lightning training checkpoint"):
        checkpoint_step(tmp_path / "list.ckpt")


def test_a_changed_run_key_discards_every_checkpoint(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    for name in ("last.ckpt", "hpc_ckpt_1.ckpt", "best.ckpt"):
        fake_checkpoint(checkpoints / name, 5)
    (tmp_path / "training_done.json").write_text("{}")
    discard_stale_training(tmp_path, "key-A")
    assert not checkpoints.exists() and not (tmp_path / "training_done.json").exists()
    checkpoints.mkdir()
    fake_checkpoint(checkpoints / "last.ckpt", 5)
    discard_stale_training(tmp_path, "key-A")  # same run: kept
    assert (checkpoints / "last.ckpt").is_file()


def test_an_upstream_step_rerun_with_the_same_artifacts_keeps_the_training(tmp_path):
    """The run key hashes what an upstream phase made (its artifacts), not its manifest's bytes: ExPLoRA
    re-run for another tracker writes a new manifest (times, metrics.tracking) and must not restart phase 1;
    another artifact does. A tracker or compile switch in the section itself resumes too."""
    from streetvision.train.trainer import start_training_phase

    upstream, phase = tmp_path / "explora", tmp_path / "baseline"
    upstream.mkdir()

    def write_upstream(adapter_sha: str, finished_at: str, tracking: dict) -> Path:
        manifest = {"schema_version": 1, "phase": "explora", "consumed": [],
                    "artifacts": [{"path": "adapter.safetensors", "sha256": adapter_sha}],
                    "finished_at": finished_at, "metrics": {"tracking": tracking}}
        (upstream / "manifest.json").write_text(json.dumps(manifest))
        return upstream / "manifest.json"

    def start(section: dict, manifest: Path) -> None:
        start_training_phase("baseline", phase, {"train": section}, seed=0, gpus=0, cpu_devices=1,
                             upstream=[manifest])

    section = {"lr": 1e-3, "loggers": ["csv"], "compile": False}
    start(section, write_upstream("a" * 64, "10:00", {}))
    (phase / "checkpoints").mkdir()
    fake_checkpoint(phase / "checkpoints" / "last.ckpt", 5)
    start({**section, "loggers": ["csv", "mlflow"], "compile": True},
          write_upstream("a" * 64, "11:00", {"mlflow": {"run_id": "r1"}}))
    assert (phase / "checkpoints" / "last.ckpt").is_file()
    start(section, write_upstream("b" * 64, "12:00", {}))  # another adapter: another run
    assert not (phase / "checkpoints").exists()


def test_other_ranks_wait_for_rank_zero_to_settle_the_run_key(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "1")
    fake_checkpoint(tmp_path / "last.ckpt", 5)
    with pytest.raises(TimeoutError, match="rank 0 did not record run key"):
        discard_stale_training(tmp_path, "key-B", wait_s=0.3)
    (tmp_path / "run_key.txt").write_text("key-B")
    discard_stale_training(tmp_path, "key-B", wait_s=0.3)
    assert (tmp_path / "last.ckpt").is_file()  # only rank 0 ever deletes


def test_interval_checkpoints_write_last_ckpt_next_to_the_epoch_ones(tmp_path):
    with_interval = checkpoint_callbacks(tmp_path, "val/mcc", 2.5)
    assert [c.filename for c in with_interval] == ["best", "last", "last"]
    assert with_interval[1].every_n_epochs == 1 and with_interval[2]._train_time_interval == timedelta(minutes=2.5)
    assert not any(c._enable_version_counter for c in with_interval)
    assert [c.filename for c in checkpoint_callbacks(tmp_path, None, 0)] == ["last"]


# ------------------------------------------------------------------ a real training job, stopped and resumed

JOB = textwrap.dedent(
    """
    import json, sys
    from streetvision.logs import log_to_file
    from streetvision.phases.baseline import run_baseline

    args = json.loads(sys.argv[1])
    with log_to_file(args["log"]):
        run_baseline(cfg=args["cfg"], data_dir=args["data_dir"], out_dir=args["out_dir"], experiment="demo")
    """
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "data"
    ingest_and_index(cfg={"data": resolved_config(REPO)["data"]}, out_dir=out, experiment="demo")
    return out


def mid_epoch_step(path, steps_per_epoch):
    """The step of a checkpoint inside an epoch after the first (so curves.csv already holds a validation row)."""
    try:
        step = checkpoint_step(path)
    except Exception:  # noqa: BLE001 - not there yet
        return None
    return step if step % steps_per_epoch and step > steps_per_epoch else None


@pytest.mark.slow
def test_sigterm_saves_the_state_and_a_rerun_resumes_mid_epoch_past_a_torn_last_ckpt(data_dir, tmp_path):
    batch, epochs = 8, 4
    cfg = resolved_config(REPO, {"train": {"batch_size": batch, "max_epochs": epochs, "patience": 0,
                                           "checkpoint_interval_minutes": 0.002}})  # every ~0.1 s
    steps_per_epoch = int((pd.read_parquet(data_dir / "index.parquet")["split"] == "train").sum()) // batch
    args = {"cfg": {key: cfg[key] for key in ("model", "train", "challenge")}, "data_dir": str(data_dir),
            "out_dir": str(tmp_path / "p1"), "log": str(tmp_path / "p1.log")}
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    job = subprocess.Popen([sys.executable, "-c", JOB, json.dumps(args)], env=env, stderr=subprocess.PIPE,
                           text=True)
    last = tmp_path / "p1/checkpoints/last.ckpt"
    deadline = time.monotonic() + 300
    while mid_epoch_step(last, steps_per_epoch) is None:  # the interval checkpoint lands inside an epoch
        assert job.poll() is None, job.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "no mid-epoch last.ckpt"
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=120) == 128 + signal.SIGTERM
    saved = tmp_path / "p1/checkpoints/hpc_ckpt_1.ckpt"
    assert saved.is_file(), (tmp_path / "p1.log").read_text()[-3000:]
    stopped_at = checkpoint_step(saved)
    assert stopped_at % steps_per_epoch and stopped_at < epochs * steps_per_epoch, "SIGTERM landed too late"
    assert "SIGTERM at global step" in (tmp_path / "p1.log").read_text()

    last.write_bytes(last.read_bytes()[:100])  # torn: skipped with a warning, never a crash loop
    rerun = subprocess.run([sys.executable, "-c", JOB, json.dumps(args)], env=env, capture_output=True,
                           text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    log = (tmp_path / "p1.log").read_text()
    assert "last.ckpt is unreadable" in log and f"resuming from {saved} at global step {stopped_at}" in log
    done = json.loads((tmp_path / "p1/training_done.json").read_text())
    assert done["resumed_from"] == "hpc_ckpt_1.ckpt" and done["resumed_from_step"] == stopped_at
    assert done["global_step"] == epochs * steps_per_epoch  # the interrupted epoch was finished, not redone
    assert checkpoint_step(last) == done["global_step"]  # last.ckpt holds the final state
    assert not list((tmp_path / "p1/checkpoints").glob("hpc_ckpt_*"))  # only needed until the fit finished
    metrics = json.loads((tmp_path / "p1/manifest.json").read_text())["metrics"]
    assert metrics["resumed_from_step"] == stopped_at
    curves = pd.read_csv(tmp_path / "p1/curves.csv")  # the epochs before the stop are kept, none twice
    assert curves.dropna(subset=["val_select/mcc"])["epoch"].tolist() == list(range(epochs))
    assert curves.dropna(subset=["train/loss_step"])["step"].is_unique


class PlantedCode:
    """Unpickling this (``weights_only=False``) would create ``path``: code run from a checkpoint file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.slow
def test_a_planted_checkpoint_never_runs_and_a_truncated_best_ckpt_trains_again(data_dir, tmp_path):
    cfg = resolved_config(REPO, {"train": {"max_epochs": 2, "patience": 0}})
    args = {"cfg": {key: cfg[key] for key in ("model", "train", "challenge")}, "data_dir": str(data_dir),
            "out_dir": str(tmp_path / "p1"), "log": str(tmp_path / "p1.log")}
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}

    def run_job():
        done = subprocess.run([sys.executable, "-c", JOB, json.dumps(args)], env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return (tmp_path / "p1.log").read_text()

    run_job()
    best = tmp_path / "p1/checkpoints/best.ckpt"
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])  # truncated after training finished
    log = run_job()
    assert "is not the file it wrote (truncated or replaced): training again" in log
    assert json.loads((tmp_path / "p1/manifest.json").read_text())["metrics"]["epochs"] == 2

    # An interrupted run (same config and data, no finished record) whose last.ckpt someone replaced.
    (tmp_path / "p1/training_done.json").unlink()
    best.unlink()
    marker = tmp_path / "code_ran"
    torch.save({"state_dict": {}, "loops": {}, "global_step": 10**6, "payload": PlantedCode(marker)},
               tmp_path / "p1/checkpoints/last.ckpt")
    log = run_job()
    assert not marker.exists(), "a checkpoint file ran code"
    assert "last.ckpt is unreadable" in log and "resuming from" not in log.split("last.ckpt is unreadable")[-1]
