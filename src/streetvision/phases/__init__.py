"""One runner per workflow step (``rules/<step>.smk`` -> ``scripts/<step>.py`` -> ``phases/<step>.py``).

A runner is orchestration only: read its inputs through ``streetvision.layout``, call the library, and
record every output through the recorder ``step_recorder`` opens for it. Each runner names its step once
(``STEP``); its folder, manifest phase, log and benchmark names derive from that name (``layout.STEP_DIRS``).
Runners take keyword arguments only: the step's config sections (``cfg``), the folders of the steps it
consumes (``<step>_dir``; the bundle step's is ``bundle_step_dir``: its folder holds the bundle), its own
``out_dir``, ``experiment`` and ``workflow_dir``. No runner imports another runner.
"""

from __future__ import annotations

from pathlib import Path

from streetvision import layout
from streetvision.io.manifest import PhaseRecorder

# The runner argument of a consumed step's folder, where ``<step>_dir`` would mislead.
_DIR_ARGUMENT = {"bundle": "bundle_step_dir"}


def step_dirs(named_manifests) -> dict[str, Path]:
    """``{"baseline": ".../phase1_baseline/manifest.json", ...}`` -> ``{"baseline_dir": Path(...)}``.

    Works on Snakemake's named input lists (used by the thin ``scripts/``) and on plain dicts.
    """
    items = named_manifests.items() if hasattr(named_manifests, "items") else named_manifests
    return {_DIR_ARGUMENT.get(name, f"{name}_dir"): Path(str(path)).parent for name, path in items if path}


def output_dir(named_outputs) -> Path:
    """A step's own folder: the parent of its ``manifest`` output."""
    return Path(str(named_outputs["manifest"] if hasattr(named_outputs,
                                                         "keys") else named_outputs.manifest)).parent


def step_recorder(step: str, out_dir, experiment: str, config_section, **kwargs) -> PhaseRecorder:
    """The recorder of ``step``'s folder; the manifest's ``phase`` is the folder's name (phase1_baseline)."""
    return PhaseRecorder(out_dir, layout.STEP_DIRS[step], experiment, config_section, **kwargs)


def val_test_challenges(data_dir, baseline_dir, seed: int):
    """val_test's index rows in phase 1's prediction order, and each image's seeded challenge (the 224x224
    JPEG a miner would receive): what the bundle's and the Hugging Face export's parity checks score."""
    from streetvision.data.views import EvaluationChallenge, samples_of

    index = layout.load_index(data_dir).set_index("id", drop=False)
    test = index.loc[layout.predictions_of(baseline_dir, "val_test")["id"]].reset_index(drop=True)
    challenge = EvaluationChallenge(seed)
    return test, [challenge.image(sample) for sample in samples_of(test)]
