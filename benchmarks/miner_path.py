"""A challenge through the stock miner's request path, timed on this machine against the validators' 9 s timeout.

    python benchmarks/miner_path.py [--reps 20] [--threads 1]

For the demo model (a class-token ViT on the 224 px challenge) and DINOv2 ViT-S/14 at 224 px (random init: the
cost does not depend on the weights), each exported to a Hugging Face repo: a 224x224 challenge JPEG and a
level -1 challenge (the cached 1920x1080 image sent unaugmented) are base64-encoded as validators send them,
then decoded and answered the stock miner's way (``miner_image`` + ``pipeline`` + the score of
``Roadwork``), one request at a time (batch 1, as the miner serves). Prints the median and p90 seconds per
request and their share of the 9 s timeout; loading the pipeline is timed once apart (the miner loads once).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import photo_like_jpeg  # noqa: E402

from streetvision.bundle.export import write_model_bundle  # noqa: E402
from streetvision.bundle.hf_export import export_hf_repo  # noqa: E402
from streetvision.bundle.hf_miner import load_miner_pipeline, miner_image, roadwork_score, validator_payload  # noqa: E402
from streetvision.data.challenge import simulate_challenge, validator_cache  # noqa: E402
from streetvision.models.backbone import build_backbone, data_config  # noqa: E402
from streetvision.models.spec import ClassifierSpec  # noqa: E402

TIMEOUT_S = 9.0  # the validators' dendrite timeout (natix/validator/forward.py)
MODELS = {
    "demo ViT (0.3M)": {"backbone": "vit_tiny_patch16_224", "img_size": 224, "init": "random",
                        "backbone_kwargs": {"patch_size": 28, "embed_dim": 64, "depth": 3, "num_heads": 2,
                                            "class_token": True, "global_pool": "token"}},
    "DINOv2 ViT-S/14 @224": {"backbone": "vit_small_patch14_dinov2", "img_size": 224, "init": "random",
                             "backbone_kwargs": {}},
}
HOTKEY = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"


def export(cfg: dict, root: Path) -> Path:
    torch.manual_seed(0)
    backbone = build_backbone(cfg)
    spec = ClassifierSpec.from_config({**cfg, "head": "auto", "head_hidden": 0, "head_dropout": 0.0},
                                      data_config(backbone, cfg["img_size"]))
    card = {"model_name": "miner-path", "version": "0.0.1", "submitted_by": HOTKEY, "notes": ""}
    bundle = write_model_bundle(root / "bundle", spec.build(backbone), spec,
                                {"type": "threshold", "threshold": 0.5, "temperature": 1.0}, card)
    export_hf_repo(bundle, root / "repo", description="timing", license="mit", hf_repo=None)
    return root / "repo"


def time_requests(pipe, payload: str, reps: int) -> np.ndarray:
    roadwork_score(pipe, miner_image(payload))  # warm-up
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        roadwork_score(pipe, miner_image(payload))
        seconds.append(time.perf_counter() - start)
    return np.array(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    source = validator_cache(photo_like_jpeg(0, 1920, 1080))
    payloads = {"224x224 challenge (level 2)": simulate_challenge(source, level=2, rng=1)[1]["jpeg_bytes"],
                "level -1 (1920x1080 as cached)": simulate_challenge(source, level=-1, rng=1)[1]["jpeg_bytes"]}
    print(f"CPU, torch threads {torch.get_num_threads()}, {args.reps} requests each, batch 1; timeout {TIMEOUT_S} s")
    print(f"{'model':<24} {'challenge':<32} {'load s':>7} {'median s':>9} {'p90 s':>7} {'of 9 s':>7}")
    for name, cfg in MODELS.items():
        with tempfile.TemporaryDirectory() as tmp:
            repo = export(cfg, Path(tmp))
            start = time.perf_counter()
            pipe = load_miner_pipeline(repo)
            load = time.perf_counter() - start
            for label, jpeg in payloads.items():
                seconds = time_requests(pipe, validator_payload(jpeg), args.reps)
                median, p90 = np.median(seconds), np.percentile(seconds, 90)
                print(f"{name:<24} {label:<32} {load:7.2f} {median:9.4f} {p90:7.4f} {p90 / TIMEOUT_S:7.2%}")


if __name__ == "__main__":
    main()
