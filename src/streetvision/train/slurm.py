"""A training phase as SLURM tasks: one task per GPU, started with ``srun``, wired into DDP by Lightning.

Lightning's ``SLURMEnvironment`` expects every rank to be a SLURM task of one job step (rank, world
size and rendezvous come from ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_NODELIST``). Snakemake's SLURM
executor runs a rule as a single process: inside an ``srun -n1`` step (the jobstep plugin's default), or in
the batch step for jobs with the ``mpi`` resource. So when the job was given N > 1 tasks (``gpu=N`` with
``tasks_per_gpu=1`` in the profile, or ``tasks=N`` on CPU) and this process is not one of them yet,
:func:`launch_tasks_if_needed` replaces it with ``srun`` starting N copies of the same script; each copy
runs the whole phase as one rank, and rank 0 writes the outputs.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from streetvision.errors import StreetvisionError

log = logging.getLogger(__name__)

# What a nested srun may inherit: the job's identity. Step-level values (SLURM_NTASKS=1,
# SLURM_CPUS_PER_TASK of the enclosing step, ...) would override the layout asked for here.
KEPT_SLURM_VARIABLES = {"SLURM_JOB_ID", "SLURM_JOBID", "SLURM_CLUSTER_NAME", "SLURM_CONF",
                        "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_SUBMIT_DIR", "SLURM_SUBMIT_HOST"}


class SlurmLaunchError(StreetvisionError, RuntimeError):
    """A multi-task SLURM job that cannot be started as tasks."""


@dataclass(frozen=True)
class StepTasks:
    """This process's place among the tasks of its SLURM job step."""

    total: int
    per_node: int
    nodes: int
    rank: int


@dataclass(frozen=True)
class JobShape:
    """A SLURM job's allocation, as ``scontrol show job`` reports it."""

    tasks: int
    cpus: int
    nodes: int


def step_tasks(environ=os.environ) -> StepTasks | None:
    """The task layout of the SLURM job step this process runs in; None outside a step."""
    if "SLURM_STEP_ID" not in environ or "SLURM_NTASKS" not in environ:
        return None
    total = int(environ["SLURM_NTASKS"])
    nodes = int(environ.get("SLURM_STEP_NUM_NODES") or environ.get("SLURM_NNODES") or 1)
    per_node = int(environ.get("SLURM_NTASKS_PER_NODE") or max(1, total // nodes))
    return StepTasks(total=total, per_node=per_node, nodes=nodes, rank=int(environ.get("SLURM_PROCID", 0)))


def job_shape(job_id: str) -> JobShape | None:
    """Tasks, CPUs and nodes of SLURM job ``job_id`` (None when ``scontrol`` cannot tell)."""
    try:
        shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                               timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("scontrol show job %s failed (%s): running as a single task", job_id, err)
        return None
    fields = dict(re.findall(r"\b(NumTasks|NumCPUs|NumNodes)=(\d+)", shown))
    if len(fields) < 3:
        return None
    return JobShape(tasks=int(fields["NumTasks"]), cpus=int(fields["NumCPUs"]), nodes=int(fields["NumNodes"]))


def srun_command(shape: JobShape, argv: list[str], python: str = sys.executable) -> list[str]:
    """``srun`` starting one copy of ``python argv`` per task of the job, spread evenly over its nodes.

    ``--overlap`` because the launching process may itself hold a step's resources (the jobstep plugin's
    ``srun -n1``); ``--gpu-bind=none`` so that every task sees all of its node's GPUs, as Lightning's
    device-per-local-rank placement expects; ``--kill-on-bad-exit`` so that one failed rank ends the others
    instead of leaving them waiting in a collective.
    """
    per_node = max(1, shape.tasks // shape.nodes)
    return ["srun", "--overlap", f"--nodes={shape.nodes}", f"--ntasks={shape.tasks}",
            f"--ntasks-per-node={per_node}", f"--cpus-per-task={max(1, shape.cpus // shape.tasks)}",
            "--gpu-bind=none", "--kill-on-bad-exit=1", python, *argv]


def task_environment(environ=os.environ) -> dict[str, str]:
    return {k: v for k, v in environ.items()
            if not (k.startswith(("SRUN_",
                                  "SBATCH_")) or (k.startswith("SLURM_") and k not in KEPT_SLURM_VARIABLES))}


def launch_tasks_if_needed(rule: str, environ=os.environ) -> None:
    """Under a SLURM job of N > 1 tasks, from a process that is not one of them yet: become ``srun``
    running this script once per task (never returns). Otherwise (no SLURM, one task, or already a
    task) return at once.
    """
    if "SLURM_JOB_ID" not in environ:
        return
    here = step_tasks(environ)
    if here is not None and here.total > 1:
        return  # already one of the tasks
    shape = job_shape(environ["SLURM_JOB_ID"])
    if shape is None or shape.tasks <= 1:
        return
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is None or not script.is_file():
        raise SlurmLaunchError(f"rule {rule}: SLURM job {environ['SLURM_JOB_ID']} has {shape.tasks} tasks "
                               "but this "
                               f"process was not started from a script file ({sys.argv[:1]}), so it cannot "
                               "start them: run it with `srun` yourself")
    command = srun_command(shape, sys.argv)
    log.info("rule %s: SLURM job %s has %d tasks: starting them with %s", rule, environ["SLURM_JOB_ID"],
             shape.tasks, " ".join(command))
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe("srun", command, task_environment(environ))
