"""Export a bundle as a Hugging Face model repo folder that the stock NATIX miner serves.

    summary = export_hf_repo("results/x/phase6_bundle/bundle", "results/x/hf_export/repo",
                             description="...", license="mit", hf_repo="user/roadwork")

The folder holds ``config.json`` + ``model.safetensors`` (a native transformers class, policy folded
in; see ``hf_convert``), ``preprocessor_config.json``, ``model_card.json`` (NATIX), ``README.md`` and
``miner.yaml``. Before returning, the folder is loaded back with the installed transformers (no
missing or unexpected tensors) and its logits are compared with the folded logits of the bundle's
model on random inputs. Decision parity on real images the miner's way: ``hf_miner.hf_parity``.

Preprocessing: a ``ViTImageProcessor`` config (resize to img_size x img_size with the backbone's
interpolation, rescale 1/255, normalise). ``AutoImageProcessor(use_fast=True)`` loads it in
transformers 4.45.2 (as ``ViTImageProcessorFast``) and in 5.x; ``BitImageProcessor``, DINOv2's usual
processor, fails there under ``use_fast=True``. On the square 224 px challenges it reproduces
``eval_transform`` (which resizes the way transformers <= 4.48 does; see ``data.transforms.FloatResize``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from streetvision.bundle.hf_card import build_model_card, check_hf_repo, miner_yaml, render_readme
from streetvision.bundle.hf_convert import TIE_MARGIN, HFExportError, to_transformers
from streetvision.io.atomic import atomic_save_tensors, atomic_write_json, atomic_write_text

REPO_FILES = ("README.md", "config.json", "miner.yaml", "model.safetensors", "model_card.json",
              "preprocessor_config.json")
RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3}  # PIL codes, as transformers stores them
SELF_CHECK_TOLERANCE = 1e-4  # max |Δ logit| on random inputs, float32 timm vs transformers


def preprocessor_config(data_spec: dict) -> dict:
    """The ``ViTImageProcessor`` config that reproduces ``eval_transform`` on square inputs."""
    size = int(data_spec["img_size"])
    return {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True, "size": {"height": size, "width": size},
        "resample": RESAMPLE.get(data_spec.get("interpolation"), RESAMPLE["bicubic"]),  # as eval_transform
        "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": [float(v) for v in data_spec["mean"]],
        "image_std": [float(v) for v in data_spec["std"]],
    }


def preprocessing_text(processor: dict) -> str:
    names = {code: name for name, code in RESAMPLE.items()}
    size = processor["size"]["height"]
    return (f"`ViTImageProcessor`: resize to {size}x{size} ({names[processor['resample']]}, antialiased), "
            f"scale to [0, 1], normalise with mean {processor['image_mean']} and std "
            f"{processor['image_std']}. "
            f"NATIX challenges are 224x224 JPEGs; at {size} px this is exactly the workflow's evaluation "
            "transform (transformers <= 4.48 resizes like it; from 4.49 on, torchvision's uint8 kernels may "
            f"differ by a few grey levels when {size} != 224).")


def _prepare(out_dir: Path) -> None:
    """Create ``out_dir``; refuse to write into a folder holding anything but an earlier export."""
    out_dir.mkdir(parents=True, exist_ok=True)
    foreign = sorted(p.name for p in out_dir.iterdir()
                     if p.name not in REPO_FILES and not p.name.startswith("."))
    if foreign:
        raise HFExportError(f"{out_dir}: holds files that are not part of an export "
                            f"({', '.join(foreign[:5])}); choose an empty folder")


@torch.inference_mode()
def self_check(repo: Path, model, fold: dict, img_size: int, n: int = 2) -> float:
    """Load ``repo`` with the installed transformers; max |Δ| between its logits and the folded ones."""
    from transformers import AutoModelForImageClassification

    hf_model, info = AutoModelForImageClassification.from_pretrained(repo, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys",
                                                             "mismatched_keys")}
    if problems:
        raise HFExportError(f"{repo}: transformers does not load every tensor: {problems}")
    pixels = torch.randn(n, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))
    logits = model.eval()(pixels).double()
    expected = (logits - fold["logit_threshold"]) / fold["temperature"] + fold["tie_margin"]
    got = hf_model.eval()(pixel_values=pixels).logits[:, 0].double()
    return float((got - expected).abs().max())


def export_hf_repo(bundle_dir: str | Path, out_dir: str | Path, *, description: str, license: str = "mit",
                   hf_repo: str | None = None, demo: bool = False, evaluation: dict[str, dict] | None = None,
                   training: str = "", submission_time: int | None = None,
                   margin: float = TIE_MARGIN, base_model: str | None = None,
                   datasets: tuple[str, ...] = ()) -> dict:
    """Write the repo folder for the bundle's model and policy; returns a summary for the manifest.

    ``evaluation`` ({set name: {metric: value, <metric>_ci: [lo, hi]}}), ``training`` (text), ``base_model``
    and ``datasets`` (Hub ids) go into the README as given.
    ``demo`` marks the card as a demo (then ``submitted_by`` need not be a hotkey).
    """
    from streetvision.bundle.load import load_bundle, verify_bundle

    bundle_dir, out_dir = Path(bundle_dir), Path(out_dir)
    index = verify_bundle(bundle_dir)
    model_config = json.loads(index["paths"]["model_config"].read_text())
    detector = load_bundle(bundle_dir)
    policy, bundle_card = detector.policy, detector.model_card
    check_hf_repo(hf_repo)
    target, hf_config, state = to_transformers(detector.model, policy["threshold"], policy["temperature"],
                                               margin, backbone_name=model_config["backbone"])
    architecture = (f"{target.architecture} ({model_config['backbone']} @ {model_config['img_size']} px, "
                    f"head {target.head})")
    card = build_model_card(model_name=bundle_card.get("model_name", ""), description=description,
                            version=bundle_card.get("version", ""),
                            submitted_by=bundle_card.get("submitted_by", ""),
                            architecture=architecture, notes=bundle_card.get("notes", ""), demo=demo,
                            submission_time=submission_time)
    threshold, temperature = float(policy["threshold"]), float(policy["temperature"])
    fold = {"threshold": threshold, "temperature": temperature, "tie_margin": margin,
            "logit_threshold": math.log(threshold) - math.log1p(-threshold)}
    processor = preprocessor_config(model_config["data"])
    readme = render_readme(card, architecture=target.architecture, backbone=model_config["backbone"],
                           img_size=int(model_config["img_size"]), license=license, hf_repo=hf_repo,
                           fold=fold,
                           preprocessing=preprocessing_text(processor), evaluation=evaluation,
                           training=training, tags=(target.model_type,), base_model=base_model,
                           datasets=tuple(datasets))

    _prepare(out_dir)
    atomic_save_tensors(out_dir / "model.safetensors", state, {"format": "pt"})
    atomic_write_json(out_dir / "config.json", hf_config)
    atomic_write_json(out_dir / "preprocessor_config.json", processor)
    atomic_write_json(out_dir / "model_card.json", card)
    atomic_write_text(out_dir / "README.md", readme)
    atomic_write_text(out_dir / "miner.yaml", miner_yaml(hf_repo))

    diff = self_check(out_dir, detector.model, fold, int(model_config["img_size"]))
    if not diff <= SELF_CHECK_TOLERANCE:
        raise HFExportError(f"{out_dir}: transformers' logits differ from the bundle's folded logits by "
                            f"{diff:.2e} (tolerance {SELF_CHECK_TOLERANCE})")
    return {"architecture": target.architecture, "model_type": target.model_type, "head": target.head,
            "fold": fold, "self_check_max_abs_logit_diff": diff, "files": list(REPO_FILES),
            "hf_repo": hf_repo, "demo": demo, "model_card": card}


__all__ = ["REPO_FILES", "export_hf_repo", "preprocessor_config", "self_check"]
