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

from streetvision.bundle import files
from streetvision.bundle.policy import outputs
from streetvision.data.images import to_rgb
from streetvision.errors import StreetvisionError
from streetvision.io.hashing import sha256_file

BUNDLE_FILE = files.INDEX
FORMAT = files.FORMAT


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


REQUIRED_ROLES = files.REQUIRED_ROLES
OPTIONAL_ROLES = tuple(role for role in files.MEMBERS if role not in REQUIRED_ROLES)
_ENTRY_KEYS = {"path": str, "role": str, "sha256": str, "bytes": int}


def _read_bundle_index(index_path: Path) -> dict:
    """``bundle.json``, parsed and checked for shape: an object with the format and a list of file entries."""
    if not index_path.is_file() or index_path.is_symlink():
        raise BundleError(f"{index_path}: missing (or a symlink); not a streetvision bundle")
    try:
        index = json.loads(index_path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise BundleError(f"{index_path}: not UTF-8 text ({err})") from None
    except json.JSONDecodeError as err:
        raise BundleError(f"{index_path}: not valid JSON ({err})") from None
    if not isinstance(index, dict):
        raise BundleError(f"{index_path}: must be a JSON object, got {type(index).__name__}")
    if index.get("format") != FORMAT:
        raise BundleError(f"{index_path}: format is {index.get('format')!r}, expected {FORMAT!r}")
    if not isinstance(index.get("files"), list):
        raise BundleError(f"{index_path}: 'files' must be a list of file entries, got "
                          f"{type(index.get('files')).__name__}")
    for i, entry in enumerate(index["files"]):
        if not isinstance(entry, dict):
            raise BundleError(f"{index_path}: files[{i}] must be an object, got {type(entry).__name__}")
        for key, kind in _ENTRY_KEYS.items():
            if not isinstance(entry.get(key), kind) or isinstance(entry.get(key), bool):
                raise BundleError(f"{index_path}: files[{i}] ({entry.get('path', '?')}) lacks '{key}' "
                                  f"({kind.__name__}), got {entry.get(key)!r}")
    return index


def _files_by_role(index_path: Path, entries: list[dict]) -> dict[str, dict]:
    """Exactly one file per role: a bundle holds one policy, one model, one record."""
    by_role: dict[str, dict] = {}
    for entry in entries:
        role = entry["role"]
        if role not in REQUIRED_ROLES + OPTIONAL_ROLES:
            raise BundleError(f"{index_path}: {entry['path']} has unknown role {role!r}")
        if role in by_role:
            raise BundleError(f"{index_path}: two files with role '{role}' ({by_role[role]['path']}, "
                              f"{entry['path']}): a bundle holds exactly one")
        by_role[role] = entry
    missing = [role for role in REQUIRED_ROLES if role not in by_role]
    if missing:
        raise BundleError(f"{index_path}: no file with role {', '.join(repr(r) for r in missing)}")
    return by_role


def verify_bundle(path: str | Path) -> dict:
    """Check every listed file; return the parsed ``bundle.json`` with absolute paths per role."""
    root = Path(path).resolve()
    index_path = root / BUNDLE_FILE
    index = _read_bundle_index(index_path)
    members = {entry["path"]: _safe_member(root, entry["path"]) for entry in index["files"]}  # paths first
    files = {}
    for role, entry in _files_by_role(index_path, index["files"]).items():
        member = members[entry["path"]]
        size = member.stat().st_size
        if size != entry["bytes"] or sha256_file(member) != entry["sha256"]:
            raise BundleError(f"{entry['path']}: checksum mismatch (the file changed after export)")
        files[role] = member
    return {**index, "paths": files}


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if path.suffix != ".safetensors":
        raise BundleError(f"{path.name}: weights must be .safetensors (refusing to unpickle anything)")
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise BundleError(f"{path.name}: not a valid safetensors file (refusing to unpickle): {err}") from err
    bad = [name for name, tensor in tensors.items()
           if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise BundleError(f"{path.name}: tensor(s) {bad[:5]} hold NaN or infinite values")
    return tensors


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{path.name}: not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise BundleError(f"{path.name}: must be a JSON object, got {type(value).__name__}")
    return value


def _classifier_spec(path: Path):
    from streetvision.models.spec import ClassifierSpec

    record = _read_json(path)
    try:
        return ClassifierSpec.from_record(record)
    except KeyError as err:
        raise BundleError(f"{path.name}: missing key {err}") from None
    except (TypeError, ValueError) as err:
        raise BundleError(f"{path.name}: {err}") from None


class Detector:
    """``detector(pil_image) -> float`` (its round() is the decision); ``predict_batch``; ``predict_details``.
    """

    def __init__(self, model, transform, policy: dict, gate=None, device: str = "cpu",
                 card: dict | None = None, img_size: int | None = None):
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
        return torch.stack([self.transform(to_rgb(image)) for image in images])

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


def _build_model(spec, path: Path):
    from streetvision.errors import StreetvisionError as _Base

    if not {"img_size", "mean", "std", "interpolation"} <= set(spec.data):
        raise BundleError(f"{path.name}: 'data' must give img_size, mean, std and interpolation, got "
                          f"{sorted(spec.data)}")
    try:
        return spec.build()
    except _Base as err:  # an unknown timm name or arguments
        raise BundleError(f"{path.name}: {err}") from None


def _load_gate(paths: dict, policy_path: Path):
    from streetvision.calibration.gate import GateMLP

    if "gate_weights" not in paths or "gate_config" not in paths:
        raise BundleError(f"{policy_path.name}: the scrc policy needs the gate, which the bundle lacks")
    gate_config = _read_json(paths["gate_config"])
    state = _load_safetensors(paths["gate_weights"])
    try:
        gate = GateMLP(int(gate_config["in_dim"]), int(gate_config["hidden"]), state["mean"], state["std"])
        gate.load_state_dict(state)
    except KeyError as err:
        names = f"{paths['gate_config'].name} / {paths['gate_weights'].name}"
        raise BundleError(f"{names}: missing {err}") from None
    except (RuntimeError, TypeError, ValueError) as err:
        raise BundleError(f"{paths['gate_weights'].name}: does not fit {paths['gate_config'].name}: "
                          f"{err}") from None
    return gate.eval()


def load_bundle(path: str | Path, device: str = "cpu") -> Detector:
    """Verify, then load a bundle written by phase 6. Every value is checked (``BundleError`` naming the file
    and key): the policy's numbers in range, finite weights, a model record timm can build."""
    from streetvision.bundle.policy import PolicyError, needs_gate, validate_policy

    index = verify_bundle(path)
    paths = index["paths"]
    spec = _classifier_spec(paths["model_config"])
    try:
        policy = validate_policy(_read_json(paths["policy"]), paths["policy"].name)
    except PolicyError as err:
        raise BundleError(str(err)) from None
    model = _build_model(spec, paths["model_config"])
    try:
        model.load_state_dict(_load_safetensors(paths["weights"]), strict=True)
    except RuntimeError as err:
        raise BundleError(f"{paths['weights'].name}: does not fit {spec.backbone.name}: {err}") from err
    gate = None
    if needs_gate(policy):
        gate = _load_gate(paths, paths["policy"])
    card = _read_json(paths["model_card"]) if "model_card" in paths else None
    return Detector(model, spec.eval_transform(), policy, gate, device, card, img_size=spec.data["img_size"])
