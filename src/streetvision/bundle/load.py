"""Verified loading of a bundle, and the detector a miner serves.

``load_bundle`` checks every file listed in ``bundle.json`` (relative path inside the bundle, no
``..``, no symlink leaving it, size and SHA-256) before reading anything else, and loads weights
only from safetensors: nothing is ever unpickled. Every error names the offending file.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image

from streetvision.bundle.policy import outputs
from streetvision.errors import StreetvisionError
from streetvision.io.hashing import sha256_file

BUNDLE_FILE = "bundle.json"
FORMAT = "streetvision-bundle"


class BundleError(StreetvisionError, ValueError):
    """The bundle is incomplete, tampered with or unsafe; the message names the file."""


def _safe_member(root: Path, relative: str) -> Path:
    pure = PurePosixPath(relative)
    if pure.is_absolute() or "\\" in relative or relative.startswith("/"):
        raise BundleError(f"{relative}: absolute paths are not allowed in a bundle")
    if ".." in pure.parts or not pure.parts:
        raise BundleError(f"{relative}: '..' escapes are not allowed in a bundle")
    candidate = root / pure
    resolved = candidate.resolve()
    if not resolved.is_relative_to(root):
        raise BundleError(f"{relative}: resolves outside the bundle (symlink to {resolved})")
    if not resolved.is_file():
        raise BundleError(f"{relative}: listed in {BUNDLE_FILE} but missing")
    return resolved


def verify_bundle(path: str | Path) -> dict:
    """Check every listed file; return the parsed ``bundle.json`` with absolute paths per role."""
    root = Path(path).resolve()
    index_path = root / BUNDLE_FILE
    if not index_path.is_file() or index_path.is_symlink():
        raise BundleError(f"{index_path}: missing (or a symlink); not a streetvision bundle")
    try:
        index = json.loads(index_path.read_text())
    except json.JSONDecodeError as err:
        raise BundleError(f"{index_path}: not valid JSON ({err})") from err
    if index.get("format") != FORMAT:
        raise BundleError(f"{index_path}: format is {index.get('format')!r}, expected {FORMAT!r}")
    files = {}
    for entry in index.get("files", []):
        member = _safe_member(root, entry["path"])
        size = member.stat().st_size
        if size != entry["bytes"] or sha256_file(member) != entry["sha256"]:
            raise BundleError(f"{entry['path']}: checksum mismatch (the file changed after export)")
        files[entry["role"]] = member
    for role in ("weights", "model_config", "policy"):
        if role not in files:
            raise BundleError(f"{index_path}: no file with role '{role}'")
    return {**index, "paths": files}


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if path.suffix != ".safetensors":
        raise BundleError(f"{path.name}: weights must be .safetensors (refusing to unpickle anything)")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise BundleError(f"{path.name}: not a valid safetensors file (refusing to unpickle): {err}") from err


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{path.name}: not valid JSON ({err})") from err


class Detector:
    """``detector(pil_image) -> float`` (round() gives the decision); ``predict_batch``; ``predict_details``."""

    def __init__(self, model, transform, policy: dict, gate=None, device: str = "cpu", card: dict | None = None,
                 img_size: int | None = None):
        self.model = model.eval().to(device)
        self.img_size = img_size
        self.transform = transform
        self.policy = policy
        self.gate = gate
        self.device = torch.device(device)
        self.model_card = card or {}

    @torch.inference_mode()
    def _forward(self, tensors: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        logits, features = self.model.forward_with_features(tensors.to(self.device))
        return logits.double().cpu().numpy(), features

    def tensors(self, images) -> torch.Tensor:
        return torch.stack([self.transform(image.convert("RGB")) for image in images])

    def details_from_tensors(self, tensors: torch.Tensor) -> list[dict]:
        logits, features = self._forward(tensors)
        out = outputs(logits, self.policy)
        accepted = self._accepted(logits, features, out)
        return [{
            "probability": float(out["output"][i]), "decision": int(out["decision"][i]),
            "raw_probability": float(out["raw_probability"][i]),
            "calibrated_probability": float(out["calibrated_probability"][i]),
            **({"accepted": bool(accepted[i])} if accepted is not None else {}),
        } for i in range(len(logits))]

    def _accepted(self, logits, features, out) -> np.ndarray | None:
        if self.policy["type"] != "scrc":
            return None
        from streetvision.calibration.scrc import accepted_mask
        from streetvision.calibration.selection import decision_confidence

        if self.policy["selection_score"] == "gate":
            from streetvision.calibration.gate import GateInputs, gate_scores

            scores = gate_scores(self.gate, GateInputs(features.float().cpu().numpy(), logits).matrix())
        else:
            scores = decision_confidence(out["calibrated_probability"], out["decision"])
        return accepted_mask(scores, self.policy["selection_threshold"], out["decision"])

    def predict_details(self, images) -> list[dict]:
        return self.details_from_tensors(self.tensors(images))

    def predict_batch(self, images) -> list[float]:
        return [d["probability"] for d in self.predict_details(images)]

    def __call__(self, image: Image.Image) -> float:
        return self.predict_batch([image])[0]


def load_bundle(path: str | Path, device: str = "cpu") -> Detector:
    """Verify, then load a bundle written by phase 6."""
    from streetvision.models.spec import ClassifierSpec

    index = verify_bundle(path)
    paths = index["paths"]
    spec = ClassifierSpec.from_record(_read_json(paths["model_config"]))
    policy = _read_json(paths["policy"])
    if policy.get("type") not in ("threshold", "scrc"):
        raise BundleError(f"{paths['policy'].name}: unknown policy type {policy.get('type')!r}")
    model = spec.build()
    try:
        model.load_state_dict(_load_safetensors(paths["weights"]), strict=True)
    except RuntimeError as err:
        raise BundleError(f"{paths['weights'].name}: does not fit {spec.backbone.name}: {err}") from err
    gate = None
    if policy["type"] == "scrc" and policy["selection_score"] == "gate":
        from streetvision.calibration.gate import GateMLP

        if "gate_weights" not in paths or "gate_config" not in paths:
            raise BundleError(f"{paths['policy'].name}: the scrc policy needs the gate, which the bundle lacks")
        gate_config = _read_json(paths["gate_config"])
        state = _load_safetensors(paths["gate_weights"])
        gate = GateMLP(gate_config["in_dim"], gate_config["hidden"], state["mean"], state["std"])
        gate.load_state_dict(state)
        gate.eval()
    card = _read_json(paths["model_card"]) if "model_card" in paths else None
    return Detector(model, spec.eval_transform(), policy, gate, device, card, img_size=spec.data["img_size"])
