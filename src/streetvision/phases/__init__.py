"""One runner per workflow step (``rules/<step>.smk`` -> ``scripts/<step>.py`` -> ``phases/<step>.py``).

A runner is orchestration only: read its inputs through ``streetvision.layout``, call the library, and
record every output through a ``PhaseRecorder``. Runners take keyword arguments only: the step's config
sections (``cfg``), the folders of the steps it consumes (``<step>_dir``), its own ``out_dir``,
``experiment`` and ``workflow_dir``. No runner imports another runner.
"""

from __future__ import annotations

from pathlib import Path


def step_dirs(named_manifests) -> dict[str, Path]:
    """``{"baseline": ".../phase1_baseline/manifest.json", ...}`` -> ``{"baseline_dir": Path(...)}``.

    Works on Snakemake's named input lists (used by the thin ``scripts/``) and on plain dicts.
    """
    items = named_manifests.items() if hasattr(named_manifests, "items") else named_manifests
    return {f"{name}_dir": Path(str(path)).parent for name, path in items if path}


def output_dir(named_outputs) -> Path:
    """A step's own folder: the parent of its ``manifest`` output."""
    return Path(str(named_outputs["manifest"] if hasattr(named_outputs, "keys") else named_outputs.manifest)).parent
