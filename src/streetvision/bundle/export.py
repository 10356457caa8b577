"""The servable bundle: its policy, files, model card, and the checks that it reproduces phase 1.

The bundle holds exactly one decision policy (``bundle.policy``): ``threshold`` (phase 2's threshold)
or ``scrc`` (phase 5's selection on top of it, plus the gate when it is the selection score). Both
return the temperature-calibrated probability remapped so that round() gives the decision. The step
that assembles it is ``streetvision.phases.bundle``.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from streetvision.bundle import files as bundle_files
from streetvision.bundle.policy import validate_policy
from streetvision.data.views import EvaluationChallenge, samples_of
from streetvision.errors import StreetvisionError
from streetvision.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from streetvision.io.hashing import sha256_file
from streetvision.metrics import validator_metrics

PARITY_TOLERANCE = 1e-5


class ParityError(StreetvisionError, RuntimeError):
    """The loaded bundle does not reproduce phase 1."""


def build_policy(kind: str, thresholds: dict, scrc: dict | None = None) -> dict:
    """The one decision policy of a bundle: phase 2's threshold and temperature, plus phase 5's selection
    for the ``scrc`` policy (its threshold is a number, or one per decision: {"positive", "negative"})."""
    policy = {"type": kind, "threshold": thresholds["threshold"], "temperature": thresholds["temperature"],
              "decision_rule": "positive iff sigmoid(logit) >= threshold",
              "output": "sigmoid(logit / temperature), remapped so that round(output) == decision"}
    if kind == "scrc":
        policy.update({"selection_threshold": scrc["selection_threshold"],
                       "selection_score": scrc["selection_score"],
                       "alpha": scrc["alpha"], "delta": scrc["delta"], "guarantee": scrc["guarantee"],
                       "abstained_images": "still get the calibrated output, with accepted = false"})
    return validate_policy(policy, "the policy being exported")


def bundle_readme(policy: dict, card: dict) -> str:
    extra = ""
    if policy["type"] == "scrc":
        extra = (f"\nEach prediction also carries `accepted`: the image's selection score is >= "
                 f"{policy['selection_threshold']} (per decision when two are given), the set on which "
                 f"{policy['guarantee']}.\n")
    return f"""# {card['model_name']} {card['version']}

A streetvision bundle: roadwork detector for NATIX StreetVision. Policy: `{policy['type']}`.

```python
from PIL import Image
from streetvision.bundle import load_bundle

detector = load_bundle("path/to/bundle")   # verifies every checksum first
p = detector(Image.open("street.jpg"))      # float in [0, 1]; round(p) is the decision
```
{extra}
Files and SHA-256 are listed in `bundle.json`; weights are safetensors only.
"""


def write_bundle(bundle_dir: Path, policy: dict, card: dict, files: dict[str, tuple[str, bytes]],
                 sources: list[Path]) -> None:
    """Write every bundle file atomically, ``bundle.json`` (paths relative to the bundle) last.

    ``files`` maps a file name to (role, bytes): the weights, model record and, for the gate policy, the gate.
    """
    shutil.rmtree(bundle_dir, ignore_errors=True)  # no file of an earlier policy may linger
    for name, (_, data) in files.items():
        atomic_write_bytes(bundle_dir / name, data)
    atomic_write_json(bundle_dir / bundle_files.POLICY, policy)
    atomic_write_json(bundle_dir / bundle_files.CARD, card)
    atomic_write_text(bundle_dir / bundle_files.README, bundle_readme(policy, card))
    roles = {name: role for name, (role, _) in files.items()}
    roles.update({bundle_files.POLICY: "policy", bundle_files.CARD: "model_card",
                  bundle_files.README: "readme"})
    entries = [{"path": name, "role": role, "sha256": sha256_file(bundle_dir / name),
                "bytes": (bundle_dir / name).stat().st_size} for name, role in sorted(roles.items())]
    atomic_write_json(bundle_dir / bundle_files.INDEX, {
        "format": bundle_files.FORMAT, "format_version": 1, "policy": policy["type"],
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "files": entries,
        "source_manifests": [{"path": os.path.relpath(p, bundle_dir),
                              "sha256": sha256_file(p)} for p in sources],
    })


def model_card(card_cfg: dict, model_record: dict, *, demo: bool) -> dict:
    """The NATIX ``model_card.json`` (submitted_by must be a hotkey unless the run is a demo)."""
    from streetvision.bundle.hf_card import build_model_card

    architecture = (f"{model_record['backbone']} @ {model_record['img_size']}px, "
                    f"{model_record.get('head', 'pooled')} head (streetvision)")
    return build_model_card(model_name=card_cfg["model_name"], description=card_cfg["description"],
                            version=card_cfg["version"], submitted_by=card_cfg["submitted_by"],
                            architecture=architecture, notes=card_cfg["notes"], demo=demo)


def check_parity(detector, images: list, expected: pd.DataFrame, policy: dict) -> dict:
    """The bundle must reproduce phase 1's probabilities on the same images (``expected``, same order) and
    the policy's decisions, with outputs whose round() is the decision."""
    details = []
    for start in range(0, len(images), 64):
        details += detector.predict_details(images[start:start + 64])
    raw = np.array([d["raw_probability"] for d in details])
    max_diff = float(np.max(np.abs(raw - expected["probability"].to_numpy())))
    expected_decisions = (expected["probability"].to_numpy() >= policy["threshold"]).astype(int)
    mismatches = int(np.sum(np.array([d["decision"] for d in details]) != expected_decisions))
    rounding = int(sum(round(d["probability"]) != d["decision"] for d in details))
    if max_diff > PARITY_TOLERANCE or mismatches or rounding:
        raise ParityError(f"bundle vs phase 1 on val_test: max |Δp| {max_diff:.2e} (tolerance "
                          f"{PARITY_TOLERANCE}), "
                          f"{mismatches} decision mismatches, {rounding} outputs whose round() is not the "
                          "decision")
    return {"n": len(raw), "max_abs_probability_diff": max_diff, "decision_mismatches": 0,
            "rounding_mismatches": 0}


def robustness(detector, test: pd.DataFrame, levels: list[int], seed: int) -> dict:
    """How validators would score the bundle's answers on val_test sent through each augmentation level
    (every image at every level, seeded challenges): overall and per domain, and each image's answer by id
    (``answers``: the report's intervals resample them)."""
    samples = samples_of(test)
    result = {}
    for level in levels:
        challenge = EvaluationChallenge(seed, level=level)
        answers = np.array([p for start in range(0, len(samples), 64)
                            for p in detector.predict_batch([challenge.image(s)
                                                             for s in samples[start:start + 64]])])
        result[f"level_{level}"] = {
            **validator_metrics(test["label"], answers),
            "by_domain": {domain: validator_metrics(test["label"][members], answers[members])
                          for domain, members in ((d, (test["domain"] == d).to_numpy())
                                                  for d in sorted(test["domain"].unique()))},
            "answers": dict(zip(test["id"].astype(str), answers.astype(float).tolist(), strict=True)),
        }
    return result


def write_model_bundle(bundle_dir: Path, model, spec, policy: dict, card: dict) -> Path:
    """A bundle around an in-memory classifier and its ``ClassifierSpec`` (benchmarks, tests, tools).

    Phase 6 itself uses ``write_bundle`` with phase 1's saved files.
    """
    import json
    from dataclasses import replace

    from safetensors.torch import save

    record = replace(spec, head=model.pooling).to_record()
    files = {bundle_files.WEIGHTS: ("weights",
                                    save({k: v.contiguous() for k, v in model.state_dict().items()})),
             bundle_files.MODEL_CONFIG: ("model_config", json.dumps(record).encode())}
    write_bundle(Path(bundle_dir), policy, card, files, [])
    return Path(bundle_dir)
