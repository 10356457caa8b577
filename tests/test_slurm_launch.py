"""Starting a training phase as its SLURM job's tasks (fake ``scontrol``/``srun``; the real cluster run is
in test_slurm.py)."""

import os
import subprocess
import sys

import pytest

from streetvision.train.devices import DeviceError
from streetvision.train.slurm import JobShape, StepTasks, job_shape, srun_command, step_tasks
from streetvision.train.trainer import slurm_devices


def fake_tools(folder, num_tasks=2, num_cpus=4, scontrol_exit=0):
    """``scontrol show job`` reporting the given shape, and an ``srun`` that prints what it was asked to run."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scontrol").write_text(
        f"#!/bin/sh\necho 'JobId=42 JobName=x NumNodes=1 NumCPUs={num_cpus} NumTasks={num_tasks} "
        f"CPUs/Task=1'\nexit {scontrol_exit}\n")
    (folder / "srun").write_text('#!/bin/sh\necho "srun $*"\nenv | grep "^SLURM_" | sort\n')
    for tool in ("scontrol", "srun"):
        (folder / tool).chmod(0o755)
    return folder


LAUNCHER = """
import logging, sys
from streetvision.train.slurm import launch_tasks_if_needed
logging.basicConfig(level=logging.INFO)
launch_tasks_if_needed("baseline")
print("runs here, as one process")
"""


def run_launcher(tmp_path, env_extra, **shape):
    script = tmp_path / "job_script.py"
    script.write_text(LAUNCHER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PATH=f"{fake_tools(tmp_path / 'bin', **shape)}{os.pathsep}{env['PATH']}", **env_extra)
    return subprocess.run([sys.executable, str(script), "--flag"], env=env, capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)


def test_a_single_process_in_a_multi_task_job_becomes_srun_running_one_copy_per_task(tmp_path):
    # Inside the jobstep plugin's `srun -n1` step of a job with 2 tasks and 4 CPUs.
    step = {"SLURM_JOB_ID": "42", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "1", "SLURM_CPUS_PER_TASK": "4",
            "SLURM_PROCID": "0"}
    done = run_launcher(tmp_path, step)
    assert done.returncode == 0, done.stderr
    command, *slurm_env = done.stdout.splitlines()
    assert command == ("srun --overlap --nodes=1 --ntasks=2 --ntasks-per-node=2 --cpus-per-task=2 "
                       "--gpu-bind=none "
                       f"--kill-on-bad-exit=1 {sys.executable} {tmp_path / 'job_script.py'} --flag")
    assert slurm_env == ["SLURM_JOB_ID=42"]  # the enclosing step's layout must not leak into the new step
    assert "has 2 tasks: starting them with srun" in done.stderr


@pytest.mark.parametrize("env, shape", [
    ({"SLURM_JOB_ID": "42", "SLURM_STEP_ID": "3", "SLURM_NTASKS": "2", "SLURM_PROCID": "1"},
     {}),  # already a task
    ({"SLURM_JOB_ID": "42", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "1"}, {"num_tasks": 1}),  # a one-task job
    ({"SLURM_JOB_ID": "42"}, {"scontrol_exit": 1}),  # scontrol cannot tell: run as one process
    ({}, {}),  # no SLURM
])
def test_otherwise_the_phase_runs_in_this_process(tmp_path, env, shape):
    done = run_launcher(tmp_path, env, **shape)
    assert done.returncode == 0 and done.stdout.strip() == "runs here, as one process", done.stdout + done.stderr


def test_the_task_layout_is_read_from_slurm(tmp_path, monkeypatch):
    assert step_tasks({"SLURM_JOB_ID": "1"}) is None  # the batch step: not a task
    assert step_tasks({"SLURM_STEP_ID": "1", "SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2",
                       "SLURM_STEP_NUM_NODES": "2", "SLURM_PROCID": "3"}) == StepTasks(4, 2, 2, 3)
    monkeypatch.setenv("PATH", str(fake_tools(tmp_path, num_tasks=8, num_cpus=64)))
    assert job_shape("42") == JobShape(tasks=8, cpus=64, nodes=1)
    assert "--ntasks-per-node=4" in srun_command(JobShape(tasks=8, cpus=64, nodes=2), ["s.py"])


def test_each_gpu_needs_its_own_task(monkeypatch):
    one_task = StepTasks(total=1, per_node=1, nodes=1, rank=0)
    with pytest.raises(DeviceError, match=r"rule baseline asks for gpu=2 but its SLURM job step runs 1 task"):
        slurm_devices("gpu", 2, one_task, "baseline")
    two_tasks = StepTasks(total=2, per_node=2, nodes=1, rank=0)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)  # a task bound to one GPU
    with pytest.raises(DeviceError, match=r"each of the 2 SLURM tasks sees 1 GPU"):
        slurm_devices("gpu", 2, two_tasks, "baseline")
    assert slurm_devices("cpu", 1, two_tasks, "baseline") == 2  # on CPU the tasks are the processes
    assert slurm_devices("cpu", 3, one_task, "baseline") == 1


@pytest.mark.parametrize("environ, emptied", [
    ({}, True),  # a plain job
    ({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, True),  # the rule's own srun -n1 step
    ({"SLURM_STEP_ID": "1", "SLURM_NTASKS": "2", "SLURM_PROCID": "0"},
     False),  # rank 0 of the tasks it started
    ({"SLURM_STEP_ID": "1", "SLURM_NTASKS": "2", "SLURM_PROCID": "1"}, False),
    ({"LOCAL_RANK": "1"}, False),  # a child of Lightning's DDP launcher
])
def test_only_the_process_that_starts_a_step_empties_its_log(tmp_path, monkeypatch, environ, emptied):
    """The tasks srun starts write into the log their launcher began: rank 0 must not erase rank 1's lines."""
    from streetvision.logs import log_to_file

    for variable in ("SLURM_STEP_ID", "SLURM_NTASKS", "SLURM_PROCID", "RANK", "LOCAL_RANK",
                     "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in environ.items():
        monkeypatch.setenv(variable, value)
    log = tmp_path / "phase1_baseline.log"
    log.write_text("launcher: starting 2 tasks\n")
    with log_to_file(log):
        os.write(1, b"a rank's line\n")  # raw output, as a DDP child's
    assert ("launcher: starting 2 tasks" in log.read_text()) is not emptied
    assert "a rank's line" in log.read_text()
