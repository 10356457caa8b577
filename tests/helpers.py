"""Shared test helpers (import them with ``from helpers import ...``; conftest.py only holds fixtures)."""

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def jpeg_bytes(seed: int, size: int = 24) -> bytes:
    """A small, unique, decodable JPEG."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def corrupt_jpeg_bytes(seed: int) -> bytes:
    """A JPEG header followed by garbage: opens, but fails to decode."""
    return jpeg_bytes(seed)[:200]


def run_cli(*args: str, cwd=None, timeout=600, env=None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    full_env["PATH"] = f"{BIN}{os.pathsep}{full_env.get('PATH', '')}"
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


# A whole pipeline small enough for CI: 300 synthetic scenes, a 2-block ViT at 32 px.
TINY_CONFIG = {
    "experiments": {"demo": {}},
    "data": {"synthetic": {"count": 300, "image_size": 48},
             "splits": {"train": 0.4, "val_select": 0.1, "val_calib": 0.15, "val_conformal": 0.25, "val_test": 0.1}},
    "model": {
        "backbone": "vit_tiny_patch16_224",
        "backbone_kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2,
                            "class_token": False, "global_pool": "max"},
        "img_size": 32,
        "init": "random",
    },
    "train": {"max_epochs": 2, "batch_size": 32, "lr": 0.003, "num_workers": 0, "patience": 0},
    "explora": {"out_dim": 64, "head_hidden": 64, "head_bottleneck": 16, "n_local_crops": 2, "max_epochs": 2,
                "batch_size": 32, "num_workers": 0, "probe_max_train": 200, "lora_rank": 4},
    "gate": {"max_epochs": 50},
    "scrc": {"alpha": 0.2, "delta": 0.2, "grid_size": 20},  # certifiable with ~75 val_conformal images
}


def resolved_config(repo, overrides=None):
    """The tiny config resolved like the Snakefile does (schema defaults, validation)."""
    from streetvision.config import deep_merge, load_schema, resolve_experiments

    config = deep_merge(TINY_CONFIG, overrides or {})
    return resolve_experiments(config, load_schema(repo / "config" / "schema.yaml"))["demo"]


def photo_like_jpeg(seed: int, width: int, height: int, quality: int = 90) -> bytes:
    """A photo-sized JPEG: a demo street scene stretched to width x height, with sensor-like grain."""
    from streetvision.data.synthetic import render_scene

    rng = np.random.default_rng(seed)
    scene = render_scene(seed, label=int(seed % 2), size=256).resize((width, height), Image.Resampling.BICUBIC)
    pixels = np.asarray(scene, dtype=np.float32) + rng.normal(0.0, 4.0, (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
