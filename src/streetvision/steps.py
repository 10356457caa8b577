"""The workflow's steps and what each one consumes, in one place.

``rules/common.smk`` builds every rule's inputs from ``inputs_of`` (so the DAG has exactly these edges), and
the plan checks only what the steps a run will reach need (``planned_steps``): a run that only ingests data
needs neither weights nor a hotkey.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import PurePath

from streetvision import layout

# The steps of one experiment, in execution order (the report is shared by all experiments).
STEPS = ("data", "explora", "baseline", "thresholds", "gate", "scrc", "bundle", "hf_export")


def uses_explora(cfg: dict) -> bool:
    return cfg["explora"]["enabled"]


def bundle_uses_scrc(cfg: dict) -> bool:
    return cfg["bundle"]["policy"] == "scrc"


def scrc_uses_gate(cfg: dict) -> bool:
    return cfg["scrc"]["score"] == "gate"


def bundle_uses_gate(cfg: dict) -> bool:
    """A bundle with the scrc policy scored by the gate ships the gate."""
    return bundle_uses_scrc(cfg) and scrc_uses_gate(cfg)


def inputs_of(step: str, cfg: dict) -> list[str]:
    """The steps whose manifests ``step`` consumes for an experiment with config ``cfg``."""
    optional = {
        "baseline": [("explora", uses_explora(cfg))],
        "scrc": [("gate", scrc_uses_gate(cfg))],
        "bundle": [("gate", bundle_uses_gate(cfg)), ("scrc", bundle_uses_scrc(cfg))],
    }
    always = {
        "data": [], "explora": ["data"], "baseline": ["data"], "thresholds": ["baseline"],
        "gate": ["baseline", "thresholds"], "scrc": ["baseline", "thresholds"],
        "bundle": ["data", "baseline", "thresholds"], "hf_export": ["data", "baseline", "bundle"],
    }
    if step not in always:
        raise ValueError(f"unknown step {step!r}; steps: {', '.join(STEPS)}")
    return always[step] + [name for name, needed in optional.get(step, []) if needed]


def final_steps(cfg: dict) -> list[str]:
    """What an experiment ends in (the report consumes these): its bundle, and its Hugging Face export."""
    return ["bundle"] + (["hf_export"] if cfg["hf_export"]["enabled"] else [])


def with_upstream(steps: Iterable[str], cfg: dict) -> set[str]:
    """``steps`` and every step they need, transitively."""
    needed, todo = set(), list(steps)
    while todo:
        step = todo.pop()
        if step not in needed:
            needed.add(step)
            todo.extend(inputs_of(step, cfg))
    return needed


_STEP_OF_FOLDER = {folder: step for step, folder in layout.STEP_DIRS.items() if step in STEPS}


def planned_steps(targets: Iterable[str], experiments: dict[str, dict]) -> dict[str, set[str]]:
    """Per experiment, the steps a run towards ``targets`` (Snakemake's command-line targets) can reach.

    No target, the report, a summary file or any target that is not inside one experiment's step folder
    means everything; ``results/<exp>/<step folder>/...`` means that step and what it needs.
    """
    everything = {name: with_upstream(final_steps(cfg), cfg) for name, cfg in experiments.items()}
    targets = list(targets or [])
    if not targets:
        return everything
    planned: dict[str, set[str]] = {name: set() for name in experiments}
    for target in targets:
        path = PurePath(os.path.relpath(target) if os.path.isabs(target) else os.path.normpath(target))
        parts = path.parts
        if len(parts) < 2 or parts[0] != layout.RESULTS or parts[1] not in experiments:
            return everything
        name = parts[1]
        step = _STEP_OF_FOLDER.get(parts[2]) if len(parts) > 2 else None
        planned[name] |= with_upstream([step], experiments[name]) if step else everything[name]
    return planned
