"""Step ``hf_export``: the bundle's model as a Hugging Face repo the stock NATIX miner serves, checked the
miner's way on the challenge pass (the 224x224 JPEGs validators send).

The repo (``results/<exp>/hf_export/repo/``) holds a native transformers classifier with the phase-2
threshold and temperature folded in (``streetvision.bundle.hf_export``). The check loads it exactly as the
stock miner does — ``pipeline("image-classification", AutoModelForImageClassification, AutoImageProcessor
(use_fast=True))`` — in the installed transformers and, when present, in the miner's pinned 4.45.2
(``.ci/transformers-pin.sh``), and fails on any decision that differs from the bundle's.
"""

from __future__ import annotations

import logging
from pathlib import Path

from streetvision import layout
from streetvision.bundle.hf_convert import HFExportError
from streetvision.bundle.hf_export import export_hf_repo
from streetvision.bundle.hf_miner import MAX_SCORE_DIFF, find_transformers_pin, hf_parity
from streetvision.bundle.load import load_bundle
from streetvision.intervals import scores_with_intervals
from streetvision.logs import log_result
from streetvision.models.backbone import hub_id
from streetvision.phases import step_recorder, val_test_challenges

STEP = "hf_export"

log = logging.getLogger(__name__)


def evaluation_table(robustness: dict, test) -> dict[str, dict]:
    """The README's numbers: the bundle's val_test scores per validator level (phase 6), each with its 95 %
    bootstrap intervals from the bundle's answer to every image (``test``: val_test's rows)."""
    table = {}
    for level in sorted(robustness):
        answers = robustness[level]["answers"]
        scores = scores_with_intervals(test["label"], [answers[str(i)] for i in test["id"]])
        table[set_name(level)] = {
            k: scores[k] for k in ("n", "mcc", "mcc_ci", "accuracy", "accuracy_ci", "natix_reward",
                                   "natix_reward_ci")}
    return table


def set_name(level: str) -> str:
    """``level_2`` -> ``val_test, validator level 2``; level -1 is the unaugmented full-size image."""
    number = level.split("_")[-1]
    return "val_test, unaugmented (level -1)" if number == "-1" else f"val_test, validator level {number}"


def base_model_of(cfg: dict, backbone: str) -> str | None:
    """``hf_export.base_model``, else timm's Hub repo of the backbone when its weights came from the Hugging
    Face cache; None when unknown (random init, or a local file of unstated origin)."""
    if cfg["hf_export"]["base_model"] is not None:
        return cfg["hf_export"]["base_model"]
    return hub_id(backbone) if cfg["model"]["init"] == "hf_cache" else None


def parity_problems(check: dict) -> list[str]:
    """What fails an export in one ``hf_parity`` result (borderline flips do not: see hf_miner)."""
    problems = []
    if check["decision_mismatches"]:
        problems.append(f"{check['decision_mismatches']} decision mismatch(es) (images "
                        f"{check['mismatched_images']})")
    if check["exactly_one_half"]:
        problems.append(f"{check['exactly_one_half']} score(s) of exactly 0.5")
    if check["max_abs_probability_diff"] > MAX_SCORE_DIFF:
        problems.append(f"max |Δp| {check['max_abs_probability_diff']:.1e} > {MAX_SCORE_DIFF}")
    return problems


def run_hf_export(*, cfg: dict, data_dir, baseline_dir, bundle_step_dir, out_dir, experiment: str,
                  workflow_dir: str | None = None) -> Path:
    """``cfg`` holds the ``hf_export``, ``bundle``, ``challenge``, ``demo`` and ``model`` sections;
    ``bundle_step_dir`` is the bundle step's folder (the bundle itself is its ``bundle/``)."""
    out_dir = Path(out_dir)
    recorder = step_recorder(STEP, out_dir, experiment, cfg, workflow_dir=workflow_dir,
                             consumes=[layout.manifest_of(d) for d in (data_dir, baseline_dir,
                                                                       bundle_step_dir)])
    bundle = layout.bundle_dir_of(bundle_step_dir)
    record = layout.model_record_of(baseline_dir)
    test, images = val_test_challenges(data_dir, baseline_dir, cfg["challenge"]["seed"])
    repo = recorder.folder(layout.HFExport.REPO)
    summary = export_hf_repo(
        bundle, repo, description=cfg["bundle"]["model_card"]["description"],
        license=cfg["hf_export"]["license"], hf_repo=cfg["bundle"]["hf_repo"], demo=cfg["demo"],
        evaluation=evaluation_table(layout.robustness_of(bundle_step_dir), test),
        base_model=base_model_of(cfg, record["backbone"]), datasets=tuple(cfg["hf_export"]["datasets"]),
        training=(f"{record['backbone']} at {record['img_size']} px, trained by the streetvision workflow on "
                  "the validators' exact challenge pipeline (levels 0-3, 224x224 JPEG)."))
    recorder.register_tree(layout.HFExport.REPO)

    detector = load_bundle(bundle)
    checks = {"installed": hf_parity(detector, repo, images)}
    pin = find_transformers_pin()
    if pin is not None:
        checks["miner_pin"] = hf_parity(detector, repo, images, pin_dir=pin)
    else:
        log.warning("transformers 4.45.2 (the stock miner's pin) is not installed: checked with %s only; run "
                    ".ci/transformers-pin.sh to check the miner's version too",
                    checks["installed"]["transformers"])
    recorder.write_json(layout.HFExport.SUMMARY, summary)
    recorder.write_json(layout.HFExport.PARITY, checks)
    bad = {name: c for name, c in checks.items() if parity_problems(c)}
    if bad:
        raise HFExportError(f"{repo}: served the stock miner's way it decides differently "
                            f"from the bundle on val_test's challenge pass: " + "; ".join(
                                f"transformers {c['transformers']}: {', '.join(parity_problems(c))}"
                                for c in bad.values()))
    recorder.metrics.update({
        "architecture": summary["architecture"], "head": summary["head"],
        "self_check_max_abs_logit_diff": summary["self_check_max_abs_logit_diff"],
        "parity": {c["transformers"]: {k: c[k] for k in ("n", "decision_mismatches", "borderline_flips",
                                                         "max_abs_probability_diff")}
                   for c in checks.values()},
    })
    versions = ", ".join(f"{c['transformers']} max |Δp| {c['max_abs_probability_diff']:.1e}"
                         + (f", {c['borderline_flips']} borderline flip(s)" if c["borderline_flips"] else "")
                         for c in checks.values())
    log_result(STEP, experiment, f"{summary['architecture']} repo; 0 decision mismatches on "
                                 f"{len(images)} challenges ({versions})")
    return recorder.finish()
