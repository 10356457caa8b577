"""One device per job: GPU leases, taken before CUDA is touched, through the entry point the rules use.

The machine's GPU count is faked at the lowest level: a fake ``nvidia-smi`` first on PATH. The training
itself then runs on CPU (no CUDA here), which is the explicit, logged fallback.
"""

import fcntl
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
from helpers import REPO, ingest_and_index, resolved_config

from streetvision.train.devices import DeviceError, DeviceLease, lease_gpus, physical_gpu_count


def fake_nvidia_smi(folder, gpus: int, exit_code: int = 0):
    """A ``nvidia-smi`` that lists ``gpus`` devices for ``--query-gpu=index``; returns its folder for PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    lines = "".join(f"echo {i}\n" for i in range(gpus))
    script.write_text(f"#!/bin/sh\n{lines}exit {exit_code}\n")
    script.chmod(0o755)
    return folder


@pytest.fixture
def two_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{fake_nvidia_smi(tmp_path / 'bin', 2)}{os.pathsep}{os.environ['PATH']}")


def is_locked(path) -> bool:
    with open(path, "rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


# ------------------------------------------------------------------ counting and leasing


def test_gpus_are_counted_by_nvidia_smi_without_cuda(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(fake_nvidia_smi(tmp_path / "three", 3)))
    assert physical_gpu_count() == 3
    monkeypatch.setenv("PATH", str(fake_nvidia_smi(tmp_path / "broken", 2, exit_code=9)))
    assert physical_gpu_count() == 0  # a failing driver query counts as no GPU (with a warning)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert physical_gpu_count() == 0


def test_concurrent_leases_get_distinct_devices_and_wait_when_all_are_taken(two_gpus, tmp_path):
    first_env, second_env, third_env = {}, {}, {}
    first = lease_gpus(1, rule="baseline", lock_dir=tmp_path / "locks", environ=first_env)
    second = lease_gpus(1, rule="baseline", lock_dir=tmp_path / "locks", environ=second_env)
    try:
        assert {first.devices, second.devices} == {("0",), ("1",)}
        assert {first_env["CUDA_VISIBLE_DEVICES"], second_env["CUDA_VISIBLE_DEVICES"]} == {"0", "1"}
        assert is_locked(tmp_path / "locks/gpu0.lock") and is_locked(tmp_path / "locks/gpu1.lock")
        with pytest.raises(DeviceError, match="no 1 free GPU"):
            lease_gpus(1, rule="baseline", lock_dir=tmp_path / "locks", timeout_s=0.2, poll_s=0.05,
                       environ=third_env)
        assert "CUDA_VISIBLE_DEVICES" not in third_env
        first.release()
        third = lease_gpus(1, rule="baseline", lock_dir=tmp_path / "locks", timeout_s=5, poll_s=0.05,
                           environ=third_env)
        assert third.devices == first.devices and third_env["CUDA_VISIBLE_DEVICES"] == first.devices[0]
        third.release()
    finally:
        first.release()
        second.release()


def test_a_schedulers_allocation_is_used_as_is(two_gpus, tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "3"}
    lease = lease_gpus(1, rule="baseline", lock_dir=tmp_path / "locks", environ=env)
    assert lease.preassigned and lease.devices == ("3",) and env["CUDA_VISIBLE_DEVICES"] == "3"
    assert not (tmp_path / "locks").exists()


def test_a_user_restricted_pool_is_shared_by_locking(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "2,5"}  # more devices than the job needs: a pool, not an allocation
    lease = lease_gpus(1, rule="baseline", lock_dir=tmp_path, environ=env)
    try:
        assert not lease.preassigned and lease.devices == ("2",) and env["CUDA_VISIBLE_DEVICES"] == "2"
        assert is_locked(tmp_path / "gpu2.lock")
    finally:
        lease.release()


def test_no_gpu_means_an_empty_lease_and_an_untouched_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    env = {}
    assert lease_gpus(1, rule="baseline", lock_dir=tmp_path / "locks", environ=env) == DeviceLease()
    assert env == {} and not (tmp_path / "locks").exists()
    assert lease_gpus(1, rule="baseline", environ={"CUDA_VISIBLE_DEVICES": ""}).devices == ()


# ------------------------------------------------------------------ bad input, through the runners


def test_more_gpus_than_visible_is_an_error_before_training(two_gpus, tmp_path, monkeypatch):
    from streetvision.phases.baseline import run_baseline
    from streetvision.phases.explora import run_explora

    cfg = resolved_config(REPO)
    with pytest.raises(DeviceError, match=r"rule baseline asks for gpu=3 but this machine has 2 visible GPU"):
        run_baseline(cfg={"model": cfg["model"], "train": cfg["train"]}, data_dir=tmp_path / "data",
                     out_dir=tmp_path / "p1", experiment="demo", gpus=3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(DeviceError,
                       match=r"rule explora asks for gpu=2 but CUDA_VISIBLE_DEVICES=0 has 1 visible"):
        run_explora(cfg={"model": cfg["model"], "explora": cfg["explora"]}, data_dir=tmp_path / "data",
                    out_dir=tmp_path / "p4", experiment="demo", gpus=2)
    assert not (tmp_path / "p1").exists() and not (tmp_path / "p4").exists()


def test_an_unwritable_lock_directory_is_named(two_gpus, tmp_path, monkeypatch):
    from streetvision.phases.baseline import run_baseline

    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("STREETVISION_GPU_LOCK_DIR", str(tmp_path / "a_file" / "locks"))
    cfg = resolved_config(REPO)
    with pytest.raises(DeviceError,
                       match=r"GPU lock directory .*a_file/locks is not writable.*STREETVISION_GPU_LOCK_DIR"):
        run_baseline(cfg={"model": cfg["model"], "train": cfg["train"]}, data_dir=tmp_path / "data",
                     out_dir=tmp_path / "p1", experiment="demo", gpus=1)
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


# ------------------------------------------------------------------ two real training jobs at once

# A training job as the rule runs it (scripts/baseline.py: log_to_file + run_baseline), with every
# torch.cuda query guarded: it must come after CUDA_VISIBLE_DEVICES is set. The job reports what it saw,
# then keeps running (and so holds its lease) until the test writes a line to its stdin.
JOB = textwrap.dedent(
    """
    import json, os, sys
    import torch

    args = json.loads(sys.argv[1])
    seen = []

    def guard(name, original):
        def guarded(*a, **k):
            seen.append([name, os.environ.get("CUDA_VISIBLE_DEVICES")])
            if "CUDA_VISIBLE_DEVICES" not in os.environ:
                raise AssertionError(f"torch.cuda.{name}() ran before CUDA_VISIBLE_DEVICES was set")
            return original(*a, **k)
        return guarded

    for name in ("is_available", "device_count", "init", "_lazy_init", "current_device", "set_device",
                 "get_device_properties", "get_device_name", "mem_get_info"):
        setattr(torch.cuda, name, guard(name, getattr(torch.cuda, name)))
    if args.get("query_cuda_first"):
        torch.cuda.is_available()

    from streetvision.logs import log_to_file
    from streetvision.phases.baseline import run_baseline

    with log_to_file(args["log"]):
        run_baseline(cfg=args["cfg"], data_dir=args["data_dir"], out_dir=args["out_dir"], experiment="demo",
                     gpus=1)
    with open(args["report"], "w") as f:
        json.dump({"visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "cuda_queries": seen}, f)
    sys.stdin.readline()
    """
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, repo):
    out = tmp_path_factory.mktemp("data") / "data"
    ingest_and_index(cfg={"data": resolved_config(repo)["data"]}, out_dir=out, experiment="demo")
    return out


def start_job(tmp_path, name, data_dir, env, **extra):
    cfg = resolved_config(REPO, {"train": {"max_epochs": 1}})
    args = {"cfg": {key: cfg[key] for key in ("model", "train", "challenge")}, "data_dir": str(data_dir),
            "out_dir": str(tmp_path / name), "log": str(tmp_path / f"{name}.log"),
            "report": str(tmp_path / f"{name}.json"), **extra}
    return subprocess.Popen([sys.executable, "-c", JOB, json.dumps(args)], stdin=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def wait_for(path, process, timeout=300):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"job exited with {process.returncode}: {process.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.2)
    return json.loads(path.read_text())


@pytest.mark.slow
def test_two_training_jobs_at_once_use_different_gpus_and_hold_them_until_they_exit(data_dir, tmp_path, repo):
    locks = tmp_path / "locks"
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(PATH=f"{fake_nvidia_smi(tmp_path / 'bin', 2)}{os.pathsep}{env['PATH']}",
               STREETVISION_GPU_LOCK_DIR=str(locks), PYTHONPATH=str(repo / "src"))
    jobs = {name: start_job(tmp_path, name, data_dir, env) for name in ("a", "b")}
    try:
        reports = {name: wait_for(tmp_path / f"{name}.json", job) for name, job in jobs.items()}
        assert sorted(r["visible"] for r in reports.values()) == ["0", "1"]
        for name, report in reports.items():
            assert report["cuda_queries"], "the runner never asked CUDA whether it can use the device"
            assert {visible for _, visible in report["cuda_queries"]} == {report["visible"]}
            log = (tmp_path / f"{name}.log").read_text()
            assert f"locked GPU(s) {report['visible']}" in log
            assert f"rule baseline holds GPU(s) {report['visible']} but PyTorch cannot use CUDA" in log
            assert "training on CPU" in log
            assert json.loads((tmp_path / name / "manifest.json").read_text())["device"] == "cpux1"
        # Both jobs are done training but still alive: their devices stay locked ...
        assert is_locked(locks / "gpu0.lock") and is_locked(locks / "gpu1.lock")
        for job in jobs.values():
            job.stdin.write("exit\n")
            job.stdin.flush()
            assert job.wait(timeout=60) == 0
        # ... and are free once they exit.
        assert not is_locked(locks / "gpu0.lock") and not is_locked(locks / "gpu1.lock")
    finally:
        for job in jobs.values():
            job.kill()

    # The guard itself works: a job that queries CUDA before taking its lease fails.
    early = start_job(tmp_path, "early", data_dir, env, query_cuda_first=True)
    _, err = early.communicate(input="", timeout=120)
    assert early.returncode != 0 and "torch.cuda.is_available() ran before CUDA_VISIBLE_DEVICES was set" in err


@pytest.mark.slow
@pytest.mark.gpu
def test_on_real_gpus_one_job_more_than_devices_waits_for_a_free_one(data_dir, tmp_path, repo):
    """The same jobs on the machine's real GPUs (real nvidia-smi, real CUDA): each trains on its own device;
    one job more than there are devices waits until a device is released."""
    gpus = physical_gpu_count()
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(STREETVISION_GPU_LOCK_DIR=str(tmp_path / "locks"), PYTHONPATH=str(repo / "src"))
    jobs = {f"j{i}": start_job(tmp_path, f"j{i}", data_dir, env) for i in range(gpus)}
    try:
        reports = {name: wait_for(tmp_path / f"{name}.json", job) for name, job in jobs.items()}
        assert sorted(r["visible"] for r in reports.values()) == [str(i) for i in range(gpus)]
        for name in jobs:
            assert json.loads((tmp_path / name / "manifest.json").read_text())["device"] == "gpux1"
        extra = start_job(tmp_path, "extra", data_dir, env)
        jobs["extra"] = extra
        deadline = time.monotonic() + 60
        while "waiting" not in ((tmp_path / "extra.log").read_text() if (tmp_path / "extra.log").exists() else ""):
            assert time.monotonic() < deadline and extra.poll() is None, "the extra job did not wait for a GPU"
            time.sleep(0.2)
        jobs["j0"].stdin.write("exit\n")
        jobs["j0"].stdin.flush()
        assert jobs["j0"].wait(timeout=60) == 0
        assert wait_for(tmp_path / "extra.json", extra)["visible"] == reports["j0"]["visible"]
        assert json.loads((tmp_path / "extra" / "manifest.json").read_text())["device"] == "gpux1"
    finally:
        for job in jobs.values():
            job.kill()
