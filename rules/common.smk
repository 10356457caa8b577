# Path helpers, config validation and experiment expansion. No logic beyond wiring.
import sys
from pathlib import Path

# The library is importable without installing it (e.g. in a --use-conda env): the workflow's own
# src/ goes first on the path of this process and of every job it starts.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)

from snakemake.logging import logger

from streetvision.config import (
    load_config_file,
    load_schema,
    merge_layers,
    resolve_experiments,
    typed_cli_values,
)
from streetvision.plan import describe_experiment
from streetvision.runtime import prepend_pythonpath

prepend_pythonpath(SRC)


def config_layers():
    """The config files in the order given (the demo file only when none is), then --config values.

    Merged by streetvision.config (key by key, plus the backbone rule), not by Snakemake's plain
    dict update, so that a layer that switches the backbone never inherits another one's architecture.
    """
    files = workflow.overwrite_configfiles or [DEMO_CONFIGFILE]
    return [load_config_file(f) for f in files] + [
        typed_cli_values(dict(workflow.config_settings.config or {}))
    ]


RUN_CONFIG = merge_layers(config_layers())
EXPERIMENTS = resolve_experiments(
    RUN_CONFIG, load_schema(workflow.source_path("../config/schema.yaml"))
)
for (
    _name,
    _cfg,
) in EXPERIMENTS.items():  # checks inputs (weights, data) before any job runs
    _plan = describe_experiment(_name, _cfg, demo=_cfg["demo"])
    if workflow.is_main_process:
        for _line in _plan:
            (logger.warning if _line.startswith("WARNING") else logger.info)(_line)
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
