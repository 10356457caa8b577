# Path helpers, config validation and experiment expansion. No logic beyond wiring.
import sys
from pathlib import Path

# The library is importable without installing it (e.g. in a --use-conda env): the workflow's own
# src/ goes first on the path of this process and of every job it starts.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)

from streetvision.config import load_schema, resolve_experiments
from streetvision.runtime import prepend_pythonpath

prepend_pythonpath(SRC)

EXPERIMENTS = resolve_experiments(
    config, load_schema(workflow.source_path("../config/schema.yaml"))
)
RESULTS = "results"
WORKFLOW_DIR = str(Path(workflow.basedir))


wildcard_constraints:
    exp="|".join(EXPERIMENTS),


def exp_config(wildcards, section):
    """The resolved config section of one experiment (also the params that trigger reruns)."""
    return EXPERIMENTS[wildcards.exp][section]


def phase_dir(phase):
    return f"{RESULTS}/{{exp}}/{phase}"


def phase_manifest(phase):
    return f"{RESULTS}/{{exp}}/{phase}/manifest.json"


def phase_log(phase):
    return f"{RESULTS}/{{exp}}/logs/{phase}.log"


def phase_benchmark(phase):
    return f"{RESULTS}/{{exp}}/benchmarks/{phase}.tsv"


def explora_input(wildcards):
    """Phase 1 consumes phase 4's adapted backbone only when ExPLoRA is on (the DAG shows the edge)."""
    if EXPERIMENTS[wildcards.exp]["explora"]["enabled"]:
        return f"{RESULTS}/{wildcards.exp}/phase4_explora/manifest.json"
    return []


def all_targets():
    """The bundles and the report: every other phase is upstream of them."""
    bundles = [f"{RESULTS}/{exp}/phase6_bundle/manifest.json" for exp in EXPERIMENTS]
    return bundles + [f"{RESULTS}/report/manifest.json"]
