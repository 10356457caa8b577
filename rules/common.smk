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
    key_origins,
    load_config_file,
    load_schema,
    merge_layers,
    resolve_experiments,
    typed_cli_values,
)
from streetvision.data.sources import source_signature
from streetvision.plan import describe_experiment
from streetvision.runtime import prepend_pythonpath
from streetvision.steps import (
    STEPS,
    config_of,
    dataset_of,
    inputs_of,
    planned_steps,
    report_inputs,
)

prepend_pythonpath(SRC)


def config_layers():
    """(name, values) of the config files in the order given (the demo file only when none is), then of
    the --config values.

    Merged by streetvision.config (key by key, plus the backbone rule), not by Snakemake's plain
    dict update, so that a layer that switches the backbone never inherits another one's architecture.
    """
    files = workflow.overwrite_configfiles or [DEMO_CONFIGFILE]
    return [(str(f), load_config_file(f)) for f in files] + [
        ("--config", typed_cli_values(dict(workflow.config_settings.config or {})))
    ]


LAYERS = config_layers()
RUN_CONFIG = merge_layers([values for _, values in LAYERS])
EXPERIMENTS = resolve_experiments(
    RUN_CONFIG,
    load_schema(workflow.source_path("../config/schema.yaml")),
    origins=key_origins(LAYERS),
)


def command_line_targets():
    """The targets this run was asked for, read from the main process's command line with Snakemake's own
    parser (the workflow itself is not told them while this file is parsed); [] (everything) when Snakemake
    was not started from its command line."""
    import contextlib
    import io

    from snakemake.cli import get_argument_parser

    if Path(sys.argv[0]).name not in ("snakemake", "__main__.py"):
        return []
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return sorted(
                get_argument_parser().parse_known_args(sys.argv[1:])[0].targets
            )
    except SystemExit:
        return []


def announce_plan():
    """One line per experiment before any job, and the input checks that stop a run early, in the main
    process only (a job re-parses this file: on SLURM it would repeat them in every job). Checked is what
    the steps this run can reach need: a data-only target needs neither weights nor a hotkey.
    """
    if not workflow.is_main_process:
        return
    for name, steps in planned_steps(command_line_targets(), EXPERIMENTS).items():
        if not steps:
            continue
        for line in describe_experiment(
            name, EXPERIMENTS[name], demo=EXPERIMENTS[name]["demo"], steps=steps
        ):
            (logger.warning if line.startswith("WARNING") else logger.info)(line)


announce_plan()
RESULTS = layout.RESULTS
# One ingest per distinct data config (streetvision.steps.dataset_of): experiments on the same data share it.
DATASETS = {dataset_of(cfg): cfg for cfg in EXPERIMENTS.values()}
WORKFLOW_DIR = str(Path(workflow.basedir))


wildcard_constraints:
    exp="|".join(EXPERIMENTS),
    dataset="|".join(DATASETS),
    shard=r"\d+",


def step_config(step):
    """A params function: the resolved config sections ``step`` reads (streetvision.steps.CONFIG_SECTIONS);
    as a rule's params they are also what reruns the step when they change."""
    if STEPS[step].shared:
        return lambda wildcards: config_of(step, DATASETS[wildcards.dataset])
    return lambda wildcards: config_of(step, EXPERIMENTS[wildcards.exp])


def step_folder(step):
    if STEPS[step].shared:
        return f"{RESULTS}/{layout.INGEST}/{{dataset}}"
    return f"{RESULTS}/{{exp}}/{layout.STEP_DIRS[step]}"


def step_manifest(step):
    return f"{step_folder(step)}/{layout.MANIFEST}"


def step_log(step):
    if STEPS[step].shared:
        return f"{RESULTS}/{layout.LOGS}/{step}_{{dataset}}.log"
    return f"{RESULTS}/{{exp}}/{layout.LOGS}/{layout.STEP_DIRS[step]}.log"


def step_benchmark(step):
    if STEPS[step].shared:
        return f"{RESULTS}/{layout.BENCHMARKS}/{step}_{{dataset}}.tsv"
    return f"{RESULTS}/{{exp}}/{layout.BENCHMARKS}/{layout.STEP_DIRS[step]}.tsv"


def step_inputs(step):
    """An input function: {consumed step: its manifest} for one experiment's ``step`` (streetvision.steps
    owns the graph; the DAG shows an edge only where it exists, e.g. the gate only for a gate-scored SCRC).
    A shared step's manifest is its data set's."""

    def input_function(wildcards):
        cfg = EXPERIMENTS[wildcards.exp]
        return {
            name: step_manifest(name).format(exp=wildcards.exp, dataset=dataset_of(cfg))
            for name in inputs_of(step, cfg)
        }

    return input_function


def shard_manifest(shard="{shard}"):
    return f"{step_folder('synthesize')}/{layout.Synthesize.shard(shard)}/{layout.MANIFEST}"


def shard_manifests(wildcards):
    """The gather's inputs: one manifest per shard job (synthesize.shards)."""
    shards = EXPERIMENTS[wildcards.exp]["synthesize"]["shards"]
    return [shard_manifest(k).format(exp=wildcards.exp) for k in range(shards)]


def synthesize_runtime_minutes(cfg):
    """A shard's SLURM time limit: an hour plus 30 s per image (SDXL 1024 px, 25 steps, on one GPU; a
    generous guess: no GPU has measured it yet)."""
    settings = cfg["synthesize"]
    return 60 + -(-settings["count"] // settings["shards"]) // 2


def report_manifests():
    """{experiment: {step: manifest}} of what the report reads (streetvision.steps.report_inputs)."""
    return {
        exp: {step: step_manifest(step).format(exp=exp) for step in report_inputs(cfg)}
        for exp, cfg in EXPERIMENTS.items()
    }


def all_targets():
    """The report, which consumes every experiment's final steps: every other step is upstream of it."""
    return [f"{RESULTS}/report/{layout.MANIFEST}"]
