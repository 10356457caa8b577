"""Phase 6: assemble the servable bundle, reload it verified, and prove it reproduces phase 1.

The bundle holds exactly one decision policy (``bundle.policy``): ``threshold`` (phase 2's threshold)
or ``scrc`` (phase 5's selection on top of it, plus the gate when it is the selection score). Both
return the temperature-calibrated probability remapped so that round() gives the decision.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torchvision.transforms.v2.functional import to_pil_image

from streetvision.bundle.load import BUNDLE_FILE, FORMAT, load_bundle
from streetvision.data.phase import load_index
from streetvision.data.transforms import level_transform
from streetvision.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from streetvision.io.hashing import sha256_file
from streetvision.io.manifest import MANIFEST_NAME, PhaseRecorder
from streetvision.metrics import compute_all_metrics

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-5


class ParityError(RuntimeError):
    """The loaded bundle does not reproduce phase 1."""


def build_policy(kind: str, phase2_dir: Path, phase5_dir: Path) -> dict:
    thresholds = json.loads((phase2_dir / "thresholds.json").read_text())
    scrc = json.loads((phase5_dir / "scrc.json").read_text())
    policy = {"type": kind, "threshold": thresholds["threshold"], "temperature": scrc["temperature"],
              "decision_rule": "positive iff sigmoid(logit) >= threshold",
              "output": "sigmoid(logit / temperature), remapped so that round(output) == decision"}
    if kind == "scrc":
        policy.update({"selection_threshold": scrc["selection_threshold"], "selection_score": scrc["selection_score"],
                       "alpha": scrc["alpha"], "delta": scrc["delta"], "guarantee": scrc["guarantee"],
                       "abstained_images": "still get the calibrated output, with accepted = false"})
    return policy


def bundle_readme(policy: dict, card: dict) -> str:
    extra = ""
    if policy["type"] == "scrc":
        extra = (f"\nEach prediction also carries `accepted`: the image's selection score is >= "
                 f"{policy['selection_threshold']}, the set on which {policy['guarantee']}.\n")
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


def write_bundle(bundle_dir: Path, policy: dict, phase1_dir: Path, phase3_dir: Path, card: dict,
                 sources: list[Path]) -> None:
    """Write every bundle file atomically, ``bundle.json`` (paths relative to the bundle) last."""
    shutil.rmtree(bundle_dir, ignore_errors=True)  # no file of an earlier policy may linger
    files = [("model.safetensors", "weights", (phase1_dir / "model.safetensors").read_bytes()),
             ("model_config.json", "model_config", (phase1_dir / "model_config.json").read_bytes())]
    if policy["type"] == "scrc" and policy["selection_score"] == "gate":
        files += [("gate.safetensors", "gate_weights", (phase3_dir / "gate.safetensors").read_bytes()),
                  ("gate_config.json", "gate_config", (phase3_dir / "gate_config.json").read_bytes())]
    for name, _, data in files:
        atomic_write_bytes(bundle_dir / name, data)
    atomic_write_json(bundle_dir / "policy.json", policy)
    atomic_write_json(bundle_dir / "model_card.json", card)
    atomic_write_text(bundle_dir / "README.md", bundle_readme(policy, card))
    roles = {name: role for name, role, _ in files}
    roles.update({"policy.json": "policy", "model_card.json": "model_card", "README.md": "readme"})
    entries = [{"path": name, "role": role, "sha256": sha256_file(bundle_dir / name),
                "bytes": (bundle_dir / name).stat().st_size} for name, role in sorted(roles.items())]
    atomic_write_json(bundle_dir / BUNDLE_FILE, {
        "format": FORMAT, "format_version": 1, "policy": policy["type"],
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "files": entries,
        "source_manifests": [{"path": os.path.relpath(p, bundle_dir), "sha256": sha256_file(p)} for p in sources],
    })


def model_card(card_cfg: dict, phase1_dir: Path) -> dict:
    config = json.loads((phase1_dir / "model_config.json").read_text())
    return {
        "model_name": card_cfg["model_name"], "version": card_cfg["version"], "submitted_by": card_cfg["submitted_by"],
        "submission_time": datetime.now(UTC).isoformat(timespec="seconds"),
        "architecture": f"{config['backbone']} @ {config['img_size']}px + linear head (streetvision)",
        "notes": card_cfg["notes"],
    }


def check_parity(detector, index: pd.DataFrame, phase1_dir: Path, policy: dict) -> dict:
    """The bundle must reproduce phase 1's val_test probabilities and the policy's decisions."""
    expected = pd.read_parquet(phase1_dir / "predictions" / "val_test.parquet")
    paths = index.set_index("id").loc[expected["id"], "path"]
    details = []
    for start in range(0, len(paths), 64):
        details += detector.predict_details([Image.open(p) for p in paths.iloc[start:start + 64]])
    raw = np.array([d["raw_probability"] for d in details])
    max_diff = float(np.max(np.abs(raw - expected["probability"].to_numpy())))
    expected_decisions = (expected["probability"].to_numpy() >= policy["threshold"]).astype(int)
    mismatches = int(np.sum(np.array([d["decision"] for d in details]) != expected_decisions))
    rounding = int(sum(round(d["probability"]) != d["decision"] for d in details))
    if max_diff > PARITY_TOLERANCE or mismatches or rounding:
        raise ParityError(f"bundle vs phase 1 on val_test: max |Δp| {max_diff:.2e} (tolerance {PARITY_TOLERANCE}), "
                          f"{mismatches} decision mismatches, {rounding} outputs whose round() is not the decision")
    return {"n": len(raw), "max_abs_probability_diff": max_diff, "decision_mismatches": 0, "rounding_mismatches": 0}


def robustness(detector, index: pd.DataFrame, levels: list[int], seed: int) -> dict:
    """val_test metrics of the bundle's outputs on images passed through each validator level."""
    test = index[index["split"] == "val_test"].reset_index(drop=True)
    result = {}
    for level in levels:
        transform = level_transform(level, detector.img_size, [0.0] * 3, [1.0] * 3, normalize=False)
        outputs = []
        for i, path in enumerate(test["path"]):
            torch.manual_seed(seed * 1_000_003 + level * 100_003 + i)  # the same perturbation every run
            with Image.open(path) as image:
                outputs.append(detector(to_pil_image(transform(image.convert("RGB")))))
        result[f"level_{level}"] = compute_all_metrics(test["label"].astype(int), np.array(outputs), threshold=0.5)
    return result


def run_bundle_phase(bundle_cfg: dict, data_dir, phase1_dir, phase2_dir, phase3_dir, phase5_dir, out_dir,
                     experiment: str, workflow_dir: str | None = None) -> Path:
    data_dir, phase1_dir, phase2_dir, phase3_dir, phase5_dir, out_dir = map(
        Path, (data_dir, phase1_dir, phase2_dir, phase3_dir, phase5_dir, out_dir))
    recorder = PhaseRecorder(out_dir, "phase6_bundle", experiment, bundle_cfg, workflow_dir=workflow_dir)
    sources = [d / MANIFEST_NAME for d in (phase1_dir, phase2_dir, phase3_dir, phase5_dir)]
    for source in sources:
        recorder.consume(source)
    policy = build_policy(bundle_cfg["policy"], phase2_dir, phase5_dir)
    card = model_card(bundle_cfg["model_card"], phase1_dir)
    bundle_dir = out_dir / "bundle"
    write_bundle(bundle_dir, policy, phase1_dir, phase3_dir, card, sources)
    for member in sorted(bundle_dir.iterdir()):
        recorder.add_artifact(f"bundle/{member.name}")

    detector = load_bundle(bundle_dir)
    index = load_index(data_dir)
    parity = check_parity(detector, index, phase1_dir, policy)
    robust = robustness(detector, index, bundle_cfg["robustness_levels"], bundle_cfg["robustness_seed"])
    atomic_write_json(recorder.path("parity.json"), parity)
    atomic_write_json(recorder.path("robustness.json"), robust)
    recorder.add_artifact("parity.json")
    recorder.add_artifact("robustness.json")
    recorder.metrics.update({
        "policy": policy["type"], "parity": parity,
        "val_test_by_level": {level: {k: m[k] for k in ("mcc", "accuracy", "natix_reward")} for level, m in robust.items()},
    })
    log.info("bundle (%s policy) verified; parity max |Δp| %.2e; val_test MCC by level %s", policy["type"],
             parity["max_abs_probability_diff"], {k: round(v["mcc"], 3) for k, v in robust.items()})
    return recorder.finish()


