# Path helpers, config validation and experiment expansion. No logic beyond wiring.
import sys
from pathlib import Path

# The library is importable without installing it (e.g. in a --use-conda env): the workflow's own
# src/ goes first on the path of this process and of every job it starts.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)

from snakemake.logging import logger

from streetvision import layout
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


def announce_plan():
    """One line per experiment before any job (and the input checks that stop a run early)."""
    for name, cfg in EXPERIMENTS.items():
        lines = describe_experiment(name, cfg, demo=cfg["demo"])
        if workflow.is_main_process:
            for line in lines:
                (logger.warning if line.startswith("WARNING") else logger.info)(line)


announce_plan()
RESULTS = layout.RESULTS
WORKFLOW_DIR = str(Path(workflow.basedir))


wildcard_constraints:
    exp="|".join(EXPERIMENTS),


def exp_config(wildcards, *sections):
    """The resolved config sections one experiment's step reads ({section: values}); as a rule's params
    they are also what reruns the step when they change."""
    return {section: EXPERIMENTS[wildcards.exp][section] for section in sections}


def step_folder(step):
    return f"{RESULTS}/{{exp}}/{layout.STEP_DIRS[step]}"


def step_manifest(step):
    return f"{step_folder(step)}/{layout.MANIFEST}"


def step_log(step):
    return f"{RESULTS}/{{exp}}/{layout.LOGS}/{layout.STEP_DIRS[step]}.log"


def step_benchmark(step):
    return f"{RESULTS}/{{exp}}/{layout.BENCHMARKS}/{layout.STEP_DIRS[step]}.tsv"


def manifest_if(step, needed):
    """An input function: the step's manifest for experiments where ``needed(config)`` holds, else nothing
    (so the DAG shows the edge only where it exists)."""

    def input_function(wildcards):
        if needed(EXPERIMENTS[wildcards.exp]):
            return step_manifest(step).format(exp=wildcards.exp)
        return []

    return input_function


def explora_on(cfg):
    return cfg["explora"]["enabled"]


def scrc_uses_gate(cfg):
    return cfg["scrc"]["score"] == "gate"


def bundle_uses_scrc(cfg):
    return cfg["bundle"]["policy"] == "scrc"


def bundle_uses_gate(cfg):
    return bundle_uses_scrc(cfg) and scrc_uses_gate(cfg)


def hf_export_on(cfg):
    return cfg["hf_export"]["enabled"]


def final_steps(exp):
    """What an experiment ends in: its bundle, and its Hugging Face export when enabled."""
    steps = ["bundle"] + (["hf_export"] if hf_export_on(EXPERIMENTS[exp]) else [])
    return [step_manifest(step).format(exp=exp) for step in steps]


def all_targets():
    """The report, which consumes every experiment's final steps: every other step is upstream of it."""
    return [f"{RESULTS}/report/{layout.MANIFEST}"]
