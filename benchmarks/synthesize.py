"""The synthesize step's overhead over bare diffusers calls, on the tiny random SDXL pipeline (CPU).

Three timings of the same images (same prompts, seeds, parents, sizes), interleaved over repetitions:
- bare: load the SDXL pipelines with diffusers, call them image by image, encode each PNG in memory;
- step (generate stage): ``run_synthesize_shard`` whose captions and prompts are already journaled, so it
  loads SDXL and generates: the step's own cost is the journal (fsync per image), hashing, the atomic
  write, the records and the manifest. Target: at most 1.1x bare;
- step (whole shard): the same shard from nothing, captioner and LLM included (information: those are
  work, not overhead).

    python benchmarks/synthesize.py [--images 8] [--steps 25] [--size 64] [--repeats 3]

``shard_figures`` is also what ``benchmarks/gpu_smoke.py`` runs (real SDXL when the weights are cached).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

from streetvision import layout  # noqa: E402
from streetvision.config import load_schema, resolve_experiments  # noqa: E402
from streetvision.phases.ingest import run_ingest  # noqa: E402
from streetvision.phases.synthesize import run_synthesize_shard  # noqa: E402

PARENTS = {"demo": True, "experiments": {"bench": {}},
           "data": {"source": "synthetic", "synthetic": {"count": 200, "image_size": 96}}}


def resolved(overrides: dict) -> dict:
    return resolve_experiments({**PARENTS, **overrides}, load_schema(REPO / "config/schema.yaml"))["bench"]


def ingest_parents(root: Path) -> Path:
    ingest_dir = root / "results/bench/ingest"
    run_ingest(cfg={"data": resolved({})["data"]}, out_dir=ingest_dir, experiment="bench")
    return ingest_dir


def run_shard(settings: dict, ingest_dir: Path, shard_dir: Path) -> dict:
    manifest = run_synthesize_shard(cfg={"synthesize": settings}, ingest_dir=ingest_dir, out_dir=shard_dir,
                                    experiment="bench", shard=0)
    return json.loads(manifest.read_text())["metrics"]


def shard_figures(settings: dict, workdir: Path) -> dict:
    """One shard from nothing: the manifest's metrics (images/s, peak GPU memory, memory after each stage)."""
    return run_shard(settings, ingest_parents(workdir), workdir / "results/bench/synthesize/shards/0")


def bare_seconds(settings: dict, records, parent_paths: dict, device: str = "cpu") -> float:
    """Plain diffusers: load, then one call per image, PNG in memory."""
    import torch
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    from streetvision.synthesize.shard import i2i_input

    started = time.perf_counter()
    t2i = StableDiffusionXLPipeline.from_pretrained(settings["t2i"]["model"], dtype=torch.float32).to(device)
    i2i = StableDiffusionXLImg2ImgPipeline(**t2i.components)
    for pipe in (t2i, i2i):
        pipe.set_progress_bar_config(disable=True)
        pipe.vae.enable_slicing()
        pipe.vae.enable_tiling()
    for row in records.itertuples():
        call = {"prompt": row.prompt, "negative_prompt": row.negative_prompt,
                "num_inference_steps": settings["steps"], "guidance_scale": settings["guidance"],
                "generator": torch.Generator(device).manual_seed(int(row.seed))}
        if row.task == "t2i":
            image = t2i(**call, width=int(row.width), height=int(row.height)).images[0]
        else:
            image = i2i(**call, image=i2i_input(parent_paths[row.parent_sha256], settings["i2i"]["max_side"]),
                        strength=settings["i2i"]["strength"]).images[0]
        image.save(io.BytesIO(), format="PNG")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import pandas as pd
    import torch
    from tiny_models import build_tiny_models

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="bench-synthesize-"))
    models = build_tiny_models(root / "models")
    settings = resolved({"synthesize": {
        "enabled": True, "count": args.images, "steps": args.steps, "captioner": models["captioner"],
        "rewriter": models["rewriter"], "t2i": {"model": models["sdxl"], "width": args.size, "height": args.size},
        "i2i": {"model": models["sdxl"]}}})["synthesize"]
    ingest_dir = ingest_parents(root)
    parent_paths = layout.load_index(ingest_dir).set_index("sha256")["challenge_path"].to_dict()

    timings: dict[str, list[float]] = {"bare": [], "generate stage": [], "whole shard": []}
    for repeat in range(args.repeats):
        shard_dir = root / f"run{repeat}/results/bench/synthesize/shards/0"
        started = time.perf_counter()
        run_shard(settings, ingest_dir, shard_dir)
        timings["whole shard"].append(time.perf_counter() - started)
        records = pd.read_parquet(shard_dir / layout.Synthesize.RECORDS)
        (shard_dir / layout.Synthesize.WORK / "images.jsonl").unlink()  # keep captions and prompts
        shutil.rmtree(shard_dir / layout.Synthesize.IMAGES)
        started = time.perf_counter()
        metrics = run_shard(settings, ingest_dir, shard_dir)
        timings["generate stage"].append(time.perf_counter() - started)
        assert metrics["generated_now"] == args.images
        assert pd.read_parquet(shard_dir / layout.Synthesize.RECORDS).equals(records)  # same bytes again
        timings["bare"].append(bare_seconds(settings, records, parent_paths))

    bare = statistics.median(timings["bare"])
    print(f"tiny SDXL, {args.images} images ({args.size} px t2i, parents for i2i), {args.steps} steps, CPU, "
          f"1 thread, median of {args.repeats}")
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"  {name:15s} {median:7.2f} s  ({median / bare:.2f}x bare; runs: "
              f"{', '.join(f'{v:.2f}' for v in values)})")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
