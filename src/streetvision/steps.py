"""The workflow's steps, in one table: each step's folder, the steps it consumes and the config it reads.

``rules/common.smk`` builds every rule's inputs (``step_inputs``: so the DAG has exactly these edges) and its
``params.cfg`` (``config_of``) from this table, ``layout.STEP_DIRS`` takes the folders from it, and the plan
checks only what the steps a run will reach need (``planned_steps``): a run that only ingests data needs
neither weights nor a hotkey. Adding a step is one row here (docs/architecture.md, "How to add a step").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import PurePath


def uses_explora(cfg: dict) -> bool:
    return cfg["explora"]["enabled"]


def bundle_uses_scrc(cfg: dict) -> bool:
    return cfg["bundle"]["policy"] == "scrc"


def scrc_uses_gate(cfg: dict) -> bool:
    return cfg["scrc"]["score"] == "gate"


def bundle_uses_gate(cfg: dict) -> bool:
    """A bundle with the scrc policy scored by the gate ships the gate (``bundle.policy.needs_gate``)."""
    from streetvision.bundle.policy import needs_gate

    return needs_gate({"type": cfg["bundle"]["policy"], "selection_score": cfg["scrc"]["score"]})


def synthesize_on(cfg: dict) -> bool:
    return cfg["synthesize"]["enabled"]


def hf_export_on(cfg: dict) -> bool:
    return cfg["hf_export"]["enabled"]


@dataclass(frozen=True)
class Step:
    """One step of an experiment (its rule, script and runner carry the step's name)."""

    folder: str  # results/<experiment>/<folder>/ (the phase numbers users know)
    consumes: tuple[str, ...]  # steps whose manifests it always reads
    sections: tuple[str, ...]  # config its rule passes (a change re-runs it; its manifest records them)
    consumes_if: tuple[tuple[str, Callable[[dict], bool]], ...] = ()  # (step, when the config needs it)
    shared: bool = False  # one run per data set (results/_ingest/<dataset>/), shared by its experiments


# In execution order. The report (results/report/) is shared by all experiments: ``report_inputs``.
STEPS: dict[str, Step] = {
    "ingest": Step("ingest", (), ("data",), shared=True),  # experiments with one data config share it
    "synthesize": Step("synthesize", ("ingest",), ("synthesize",)),  # gathers its shards (synthesize.smk)
    "data": Step("data", ("ingest",), ("data",), (("synthesize", synthesize_on),)),
    "explora": Step("phase4_explora", ("data",), ("model", "explora")),
    "baseline": Step("phase1_baseline", ("data",), ("model", "train", "challenge"),
                     (("explora", uses_explora),)),
    "thresholds": Step("phase2_thresholds", ("baseline",), ()),
    "gate": Step("phase3_gate", ("baseline", "thresholds"), ("gate",)),
    "scrc": Step("phase5_scrc", ("baseline", "thresholds"), ("scrc",), (("gate", scrc_uses_gate),)),
    "bundle": Step("phase6_bundle", ("data", "baseline", "thresholds"), ("bundle", "challenge", "demo"),
                   (("gate", bundle_uses_gate), ("scrc", bundle_uses_scrc))),
    "hf_export": Step("hf_export", ("data", "baseline", "bundle"), ("hf_export", "bundle", "challenge",
                                                                    "demo", "model")),
}


def dataset_of(cfg: dict) -> str:
    """The id of an experiment's data set: experiments whose ``data`` sections are equal share one ingest
    (one image store, one hashing of the source) under ``results/_ingest/<id>/``."""
    from streetvision.io.hashing import config_hash

    return config_hash(cfg["data"])[:12]


def step_of(name: str) -> Step:
    if name not in STEPS:
        raise ValueError(f"unknown step {name!r}; steps: {', '.join(STEPS)}")
    return STEPS[name]


def inputs_of(step: str, cfg: dict) -> list[str]:
    """The steps whose manifests ``step`` consumes for an experiment with config ``cfg``."""
    row = step_of(step)
    return [*row.consumes, *(name for name, needed in row.consumes_if if needed(cfg))]


def config_of(step: str, cfg: dict) -> dict:
    """The sections of an experiment's resolved config that ``step`` reads: ``{section: values}``."""
    return {section: cfg[section] for section in step_of(step).sections}


def final_steps(cfg: dict) -> list[str]:
    """What an experiment ends in (the report consumes these): its bundle, and its Hugging Face export."""
    return ["bundle"] + (["hf_export"] if hf_export_on(cfg) else [])


def report_inputs(cfg: dict) -> list[str]:
    """The steps of one experiment the report reads: exactly those its run has, so a folder left from an
    earlier config (an SCRC step before the policy became ``threshold``, an export since turned off) is
    never reported."""
    return ["baseline", "thresholds", "bundle"] + (["scrc"] if bundle_uses_scrc(cfg) else []) + [
        step for step in final_steps(cfg) if step != "bundle"]


def with_upstream(steps: Iterable[str], cfg: dict) -> set[str]:
    """``steps`` and every step they need, transitively."""
    needed, todo = set(), list(steps)
    while todo:
        step = todo.pop()
        if step not in needed:
            needed.add(step)
            todo.extend(inputs_of(step, cfg))
    return needed


def planned_steps(targets: Iterable[str], experiments: dict[str, dict]) -> dict[str, set[str]]:
    """Per experiment, the steps a run towards ``targets`` (Snakemake's command-line targets) can reach.

    No target, the report, a summary file or any target that is not inside one experiment's step folder
    means everything; ``results/<exp>/<step folder>/...`` means that step and what it needs;
    ``results/_ingest/<dataset>/...`` the ingest of every experiment on that data set.
    """
    from streetvision.layout import INGEST, RESULTS

    everything = {name: with_upstream(final_steps(cfg), cfg) for name, cfg in experiments.items()}
    targets = list(targets or [])
    if not targets:
        return everything
    step_of_folder = {row.folder: name for name, row in STEPS.items()}
    planned: dict[str, set[str]] = {name: set() for name in experiments}
    for target in targets:
        parts = PurePath(os.path.relpath(target) if os.path.isabs(target) else os.path.normpath(target)).parts
        if len(parts) > 2 and parts[0] == RESULTS and parts[1] == INGEST:
            sharing = [name for name, cfg in experiments.items() if dataset_of(cfg) == parts[2]]
            if not sharing:
                return everything
            for name in sharing:
                planned[name].add("ingest")
            continue
        if len(parts) < 2 or parts[0] != RESULTS or parts[1] not in experiments:
            return everything
        name = parts[1]
        step = step_of_folder.get(parts[2]) if len(parts) > 2 else None
        planned[name] |= with_upstream([step], experiments[name]) if step else everything[name]
    return planned
