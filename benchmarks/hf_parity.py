"""Decision parity and serving time: a streetvision bundle vs its Hugging Face export loaded the stock
NATIX miner's way (transformers pipeline), with the installed transformers and with the miner's 4.45.2.

    python benchmarks/hf_parity.py --model tiny_vit --images 64
    python benchmarks/hf_parity.py --model dinov2_small --images 32 [--pin-dir DIR]

Random-init models (DINOv2's LayerScale set to 1 so outputs vary), 224x224 JPEG challenges of synthetic
scenes, threshold exactly on the median image's probability (a tie, as phase 2's sweep makes), T = 1.7.
Prints max |Δp| between the served score and the folded probability, decision mismatches (validators
round 0.5 down), exact 0.5 scores, and the per-image serving time relative to the bundle's.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from streetvision.bundle.export import write_model_bundle
from streetvision.bundle.hf_export import export_hf_repo
from streetvision.bundle.hf_miner import expected_scores, find_transformers_pin, hf_parity
from streetvision.bundle.load import load_bundle
from streetvision.data.synthetic import render_scene
from streetvision.models.backbone import build_backbone, data_config
from streetvision.models.spec import ClassifierSpec

MODELS = {
    "tiny_vit": {"backbone": "vit_tiny_patch16_224", "img_size": 64, "init": "random",
                 "backbone_kwargs": {"patch_size": 8, "embed_dim": 64, "depth": 3, "num_heads": 2,
                                     "class_token": True, "global_pool": "token"}},
    "dinov2_small": {"backbone": "vit_small_patch14_dinov2", "img_size": 224, "init": "random",
                     "backbone_kwargs": {}},
}
HOTKEY = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"  # Substrate's dev account Alice


def challenges(n: int) -> list:
    images = []
    for i in range(n):
        buffer = io.BytesIO()
        render_scene(1000 + i, i % 2, size=224).save(buffer, format="JPEG")
        images.append(Image.open(io.BytesIO(buffer.getvalue())))
    return images


def bundle_for(cfg: dict, root: Path, images: list, temperature: float) -> Path:
    """A bundle of a random-init classifier whose threshold sits exactly on the median image (a tie)."""
    torch.manual_seed(0)
    backbone = build_backbone(cfg)  # random init: DINOv2's LayerScale set to 1, so the model is not constant
    spec = ClassifierSpec.from_config({**cfg, "head": "auto", "head_hidden": 0, "head_dropout": 0.0},
                                      data_config(backbone, cfg["img_size"]))
    model = spec.build(backbone)
    card = {"model_name": "parity", "version": "0.0.1", "submitted_by": HOTKEY, "notes": ""}
    policy = {"type": "threshold", "threshold": 0.5, "temperature": temperature}
    write_model_bundle(root / "bundle", model, spec, policy, card)
    probabilities = [d["raw_probability"] for d in load_bundle(root / "bundle").predict_details(images)]
    policy["threshold"] = float(np.sort(probabilities)[len(images) // 2])
    return write_model_bundle(root / "bundle", model, spec, policy, card)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny_vit")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=1.7)
    parser.add_argument("--pin-dir", default=None,
                        help="transformers 4.45.2 folder (.ci/transformers-pin.sh)")
    args = parser.parse_args()
    images = challenges(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bundle = bundle_for(MODELS[args.model], root, images, args.temperature)
        summary = export_hf_repo(bundle, root / "repo", description="parity benchmark")
        detector = load_bundle(bundle)
        start = time.perf_counter()
        expected, _ = expected_scores(detector, images)
        ours = time.perf_counter() - start
        print(f"{args.model}: {summary['architecture']} head {summary['head']}, threshold "
              f"{summary['fold']['threshold']:.6f}, "
              f"T {args.temperature}, self-check max |Δ logit| {summary['self_check_max_abs_logit_diff']:.2e}")
        print(f"bundle model: {1000 * ours / len(images):.1f} ms/image (batch of {len(images)})")
        pin = find_transformers_pin(args.pin_dir)
        for pin_dir in (None, pin) if pin else (None,):
            start = time.perf_counter()
            parity = hf_parity(detector, root / "repo", images, pin_dir=pin_dir)
            served = time.perf_counter() - start - ours  # hf_parity recomputes the bundle side once
            near = sorted(abs(float(expected[i]) - 0.5) for i in parity["mismatched_images"])
            print(f"transformers {parity['transformers']} ({parity['processor_class']}): n {parity['n']}, "
                  f"max |Δp| {parity['max_abs_probability_diff']:.2e}, mismatches "
                  f"{parity['decision_mismatches']} "
                  f"(|p_folded - 0.5| of those: {near}), exact 0.5: {parity['exactly_one_half']}, "
                  f"served {1000 * served / len(images):.1f} ms/image incl. load"
                  f"{' and subprocess start' if pin_dir else ''} ({served / ours:.1f}x the bundle)")


if __name__ == "__main__":
    main()
