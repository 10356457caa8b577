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
    "demo": True,
    "experiments": {"demo": {}},
    "data": {"source": "synthetic", "synthetic": {"count": 300, "image_size": 48},
             "splits": {"train": 0.4, "val_select": 0.1, "val_calib": 0.15, "val_conformal": 0.25,
                        "val_test": 0.1}},
    "model": {  # exportable as transformers' ViTForImageClassification; 8 x 8 tokens of the 224 px challenge
        "backbone": "vit_tiny_patch16_224",
        "backbone_kwargs": {"patch_size": 28, "embed_dim": 32, "depth": 2, "num_heads": 2,
                            "class_token": True, "global_pool": "token"},
        "img_size": 224,
        "head": "token",
        "init": "random",
    },
    "train": {"max_epochs": 2, "batch_size": 32, "lr": 0.003, "num_workers": 0, "patience": 0},
    "explora": {"out_dim": 64, "head_hidden": 64, "head_bottleneck": 16, "n_local_crops": 2, "max_epochs": 2,
                "batch_size": 32, "num_workers": 0, "probe_max_train": 200, "lora_rank": 4},
    "gate": {"max_epochs": 50},
    "scrc": {"alpha": 0.2, "delta": 0.2},  # certifiable with ~75 val_conformal images
}


def resolved_config(repo, overrides=None):
    """The tiny config resolved like the Snakefile does (schema defaults, validation)."""
    from streetvision.config import deep_merge, load_schema, resolve_experiments

    config = deep_merge(TINY_CONFIG, overrides or {})
    return resolve_experiments(config, load_schema(repo / "config" / "schema.yaml"))["demo"]


def write_natix_shards(folder: Path, count: int, size: int = 96, shards: int = 2, seed: int = 0) -> Path:
    """A NATIX-format parquet set (image bytes, label, scene_description) drawn by the demo generator.

    Descriptions follow the validators' presence rule: roadwork rows describe the scene, others have none.
    """
    import pandas as pd

    from streetvision.data.synthetic import scene_jpeg

    folder.mkdir(parents=True, exist_ok=True)
    labels = np.random.default_rng(seed).permutation(np.arange(count) % 2)
    rows = [{"image": {"bytes": scene_jpeg(seed * 100_003 + i, int(label), size), "path": f"{i}.jpg"},
             "label": int(label),
             "scene_description": "Traffic cones and a barrier close the right lane." if label else None}
            for i, label in enumerate(labels)]
    for shard in range(shards):
        pd.DataFrame(rows[shard::shards]).to_parquet(folder / f"train-{shard:05d}.parquet", index=False)
    return folder


def ingest_and_index(*, cfg: dict, out_dir, experiment: str, **ingest_kwargs) -> Path:
    """The ingest step into ``out_dir``'s sibling ``ingest/``, then the data step into ``out_dir`` (what the
    workflow runs without synthesize). Returns the data step's manifest."""
    from streetvision.phases.data import run_data
    from streetvision.phases.ingest import run_ingest

    out_dir = Path(out_dir)
    ingest_dir = out_dir.parent / "ingest"
    run_ingest(cfg={"data": cfg["data"]}, out_dir=ingest_dir, experiment=experiment, **ingest_kwargs)
    return run_data(cfg={"data": cfg["data"]}, ingest_dir=ingest_dir, out_dir=out_dir, experiment=experiment)


def run_tiny_steps(results: Path, cfg: dict, experiment: str = "t",
                   until: str = "hf_export") -> dict[str, Path]:
    """The tiny pipeline through the real runners (no Snakemake): data -> baseline -> thresholds -> gate ->
    scrc -> bundle -> hf_export, each in its layout folder under ``results/<experiment>/`` and with the config
    sections its rule passes. Returns {step: folder}."""
    from streetvision import layout
    from streetvision.phases.baseline import run_baseline
    from streetvision.phases.bundle import run_bundle
    from streetvision.phases.gate import run_gate
    from streetvision.phases.hf_export import run_hf_export
    from streetvision.phases.scrc import run_scrc
    from streetvision.phases.thresholds import run_thresholds
    from streetvision.steps import config_of

    d = {step: layout.step_dir(results, experiment, step) for step in layout.STEP_DIRS if step != "ingest"}

    def cfg_for(step):
        return config_of(step, cfg)

    common = {"experiment": experiment}
    steps = [
        ("data", lambda: ingest_and_index(cfg=cfg_for("data"), out_dir=d["data"], **common)),
        ("baseline", lambda: run_baseline(cfg=cfg_for("baseline"), data_dir=d["data"], out_dir=d["baseline"],
                                          **common)),
        ("thresholds", lambda: run_thresholds(baseline_dir=d["baseline"], out_dir=d["thresholds"], **common)),
        ("gate", lambda: run_gate(cfg=cfg_for("gate"), baseline_dir=d["baseline"],
                                  thresholds_dir=d["thresholds"], out_dir=d["gate"], **common)),
        ("scrc", lambda: run_scrc(cfg=cfg_for("scrc"), baseline_dir=d["baseline"],
                                  thresholds_dir=d["thresholds"],
                                  gate_dir=d["gate"], out_dir=d["scrc"], **common)),
        ("bundle", lambda: run_bundle(cfg=cfg_for("bundle"), data_dir=d["data"], baseline_dir=d["baseline"],
                                      thresholds_dir=d["thresholds"], gate_dir=d["gate"], scrc_dir=d["scrc"],
                                      out_dir=d["bundle"], **common)),
        ("hf_export", lambda: run_hf_export(cfg=cfg_for("hf_export"), data_dir=d["data"],
                                            baseline_dir=d["baseline"],
                                            bundle_step_dir=d["bundle"], out_dir=d["hf_export"], **common)),
    ]
    for step, run in steps:
        run()
        if step == until:
            break
    return d


def photo_like_jpeg(seed: int, width: int, height: int, quality: int = 90) -> bytes:
    """A photo-sized JPEG: a demo street scene stretched to width x height, with sensor-like grain."""
    from streetvision.data.synthetic import render_scene

    rng = np.random.default_rng(seed)
    scene = render_scene(seed, label=int(seed % 2), size=256).resize((width, height),
                                                                     Image.Resampling.BICUBIC)
    pixels = np.asarray(scene, dtype=np.float32) + rng.normal(0.0, 4.0, (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
