"""Bundle inference latency vs a bare timm forward on the same tensors (CPU).

For the demo ViT (64 px) and vit_small_patch14_dinov2 at 224 px (random init; timing only), builds a
real bundle, loads it verified, and times p50/p95 at batch 1 and 32 for:
- bare:   the timm backbone's forward (``model(x)``), the floor any server pays;
- bundle: ``detector.details_from_tensors(x)`` (backbone + head + calibrated output mapping + policy);
- bundle from PIL images: the same plus decoding-free preprocessing (resize, crop, normalise).
Prints the bundle/bare ratio (target <= 1.10 at batch 1 on the tensor path).

    python benchmarks/inference.py [--reps 30]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from streetvision.bundle.export import write_model_bundle
from streetvision.bundle.load import load_bundle
from streetvision.models.backbone import BackboneSpec, data_config
from streetvision.models.spec import ClassifierSpec

MODELS = {
    "demo ViT @64": BackboneSpec("vit_tiny_patch16_224", 64, {"patch_size": 8, "embed_dim": 64, "depth": 3,
                                                            "num_heads": 2, "class_token": False,
                                                              "global_pool": "max"}),
    "DINOv2 ViT-S/14 @224": BackboneSpec("vit_small_patch14_dinov2", 224, {}),
}


def make_bundle(spec: BackboneSpec, root: Path) -> Path:
    torch.manual_seed(0)
    backbone = spec.build()
    classifier = ClassifierSpec(spec, data=data_config(backbone, spec.img_size))
    policy = {"type": "threshold", "threshold": 0.5, "temperature": 1.0}
    card = {"model_name": "bench", "version": "0", "submitted_by": "bench", "submission_time": "",
            "architecture": spec.name, "notes": ""}
    return write_model_bundle(root / "bundle", classifier.build(backbone), classifier, policy, card)


def timed(fns: dict, reps: int) -> dict[str, tuple[float, float]]:
    """p50/p95 in ms per function; the functions alternate within each repetition so drift hits all alike."""
    samples = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: (float(np.percentile(v, 50)) * 1e3, float(np.percentile(v,
                                                                          95)) * 1e3) for name, v in samples.items()}


def candidates(bare, detector, x: torch.Tensor, images: list) -> dict:
    def bare_forward():
        with torch.inference_mode():
            return bare(x)

    return {"bare": bare_forward, "bundle": lambda: detector.details_from_tensors(x),
            "pil": lambda: detector.predict_details(images)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} CPU threads; milliseconds per call, p50 / p95")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in MODELS.items():
            detector = load_bundle(make_bundle(spec, Path(tmp) / name.split()[0]))
            bare = detector.model.backbone
            for batch in (1, 32):
                # Fast cases get many repetitions so that p50 is stable; DINOv2 at batch 32 takes seconds per
                # call.
                reps = args.reps * 10 if spec.img_size < 100 else (args.reps if batch == 1 else max(5, args.reps // 6))
                x = torch.randn(batch, 3, spec.img_size, spec.img_size)
                images = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (spec.img_size + 32,) * 2 + (3,), dtype=np.uint8))
                          for i in range(batch)]
                t = timed(candidates(bare, detector, x, images), reps)
                (bare_p50, bare_p95), (bundle_p50, bundle_p95), (pil_p50,
                                                                 pil_p95) = t["bare"], t["bundle"], t["pil"]
                rows.append({"model": name, "batch": batch, "bare_p50_ms": bare_p50,
                             "bundle_p50_ms": bundle_p50, "ratio_p50": bundle_p50 / bare_p50})
                print(f"{name:22s} batch {batch:2d}: bare {bare_p50:8.2f} / {bare_p95:8.2f}   "
                      f"bundle {bundle_p50:8.2f} / {bundle_p95:8.2f}   bundle from PIL {pil_p50:8.2f} / "
                      f"{pil_p95:8.2f}   "
                      f"ratio bundle/bare {bundle_p50 / bare_p50:.3f}", flush=True)
    worst = max(r["ratio_p50"] for r in rows if r["batch"] == 1)
    print(f"worst batch-1 overhead ratio: {worst:.3f} (target <= 1.10: "
          f"{'met' if worst <= 1.10 else 'MISSED'})")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
