"""GPU smoke run: the real-model path through every phase on one GPU, then two experiments at once.

Stage 3 runs one synthesize shard (``benchmarks/synthesize.py``'s ``shard_figures``): SDXL base 1.0, BLIP-2 and
the Llama rewriter at the validators' settings when they are in the Hugging Face cache, else the tiny random
pipeline of the tests; printed: images/s, peak GPU memory, and what each stage left allocated.

Stage 1 runs one experiment through every phase (ExPLoRA included) with DINOv2 ViT-S/14 at 224 px
(random init), bf16-mixed, on a few thousand synthetic images, through Snakemake exactly as a user would
(``--resources gpu=1``). Stage 2 runs two experiments in one Snakemake call with ``--resources gpu=1``: their
training jobs must take the one GPU in turn (device locks), never both at once. Printed per phase: job wall
time, training images/s, peak GPU memory, and for phases 1 and 4 the model FLOP utilisation (MFU): training
FLOPs per image counted on a real forward + backward (``torch.utils.flop_counter``) times images/s, over the
device's dense bf16 peak (looked up from its name, or ``--peak-tflops``), and how loader-bound training was
(``TrainingClock``: the share of sampled steps' time spent waiting for the batch, then the mean wait and step).

    python benchmarks/gpu_smoke.py                      # on a GPU machine (about 10-20 minutes on one H100)
    python benchmarks/gpu_smoke.py --cpu-check          # tiny sizes on CPU: proves the script end to end; no MFU
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from streetvision import layout  # noqa: E402
from streetvision.config import deep_merge, load_schema, resolve_experiments, section_settings  # noqa: E402

PHASES = ["ingest", "data", "explora", "baseline", "thresholds", "gate", "scrc", "bundle",
          "hf_export"]  # rules, in run order
TRAINING = {"explora", "baseline"}

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's data sheets. First match wins.
PEAK_BF16_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("GH200", 989.0), ("H200", 989.0), ("H100", 989.0),
                    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0)]

GPU_CONFIG = {
    "demo": True,  # random init: a smoke run, never a model to mine with
    "experiments": {"smoke": {"explora": {"enabled": True}, "bundle": {"policy": "scrc"}}},  # every phase
    "data": {"source": "synthetic", "synthetic": {"count": 4000, "image_size": 256, "unlabeled_count": 1000}},
    "model": {"backbone": "vit_small_patch14_dinov2", "backbone_kwargs": {}, "img_size": 224,
              "init": "random"},
    "train": {"precision": "bf16-mixed", "batch_size": 128, "max_epochs": 2, "num_workers": 8, "patience": 0,
              "lr": 0.0003},
    "explora": {"precision": "bf16-mixed", "batch_size": 64, "max_epochs": 1, "num_workers": 8,
                "n_local_crops": 2, "linear_probe": False, "lr": 0.002, "ema_momentum": 0.9},
}
# The same path, tiny: a 2-block class-token ViT on the 224 px challenge (8 x 8 tokens), 300 images, fp32.
CPU_CONFIG = {
    "demo": True,
    "experiments": {"smoke": {"explora": {"enabled": True}, "bundle": {"policy": "scrc"}}},  # every phase
    "data": {"source": "synthetic", "synthetic": {"count": 300, "image_size": 48, "unlabeled_count": 60},
             "splits": {"train": 0.4, "val_select": 0.1, "val_calib": 0.15, "val_conformal": 0.25,
                        "val_test": 0.1}},
    "model": {"backbone": "vit_tiny_patch16_224", "img_size": 224, "head": "token", "init": "random",
              "backbone_kwargs": {"patch_size": 28, "embed_dim": 32, "depth": 2, "num_heads": 2,
                                  "class_token": True, "global_pool": "token"}},
    "train": {"max_epochs": 2, "batch_size": 8, "lr": 0.003, "num_workers": 0, "patience": 0},
    "explora": {"out_dim": 64, "head_hidden": 64, "head_bottleneck": 16, "n_local_crops": 2, "max_epochs": 3,
                "batch_size": 16, "num_workers": 0, "linear_probe": False, "lora_rank": 4, "lr": 0.01,
                "ema_momentum": 0.5},
    "scrc": {"alpha": 0.2, "delta": 0.2},
}


def snakemake(workdir: Path, config: dict, cores: int) -> float:
    (workdir / "smoke.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
               "--configfile",
               str(workdir / "smoke.yaml"), "--cores", str(cores), "--resources", "gpu=1",
               "--rerun-incomplete"]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"snakemake failed ({' '.join(command)}):\n{done.stderr[-5000:]}")
    return time.monotonic() - started


def phase_dir(workdir: Path, experiment: str, rule: str) -> Path:
    return workdir / layout.RESULTS / experiment / layout.STEP_DIRS[rule]


def job_seconds(workdir: Path, experiment: str, rule: str) -> float | None:
    if rule == "ingest":  # shared by a data set's experiments: results/benchmarks/ingest_<dataset>.tsv
        found = sorted((workdir / layout.RESULTS / layout.BENCHMARKS).glob("ingest_*.tsv"))
        tsv = found[0] if len(found) == 1 else workdir / "missing"
    else:
        tsv = workdir / layout.RESULTS / experiment / layout.BENCHMARKS / f"{layout.STEP_DIRS[rule]}.tsv"
    if not tsv.is_file():
        return None
    return float(next(csv.DictReader(tsv.open(), delimiter="\t"))["s"])


def training_record(workdir: Path, experiment: str, rule: str) -> dict | None:
    done = phase_dir(workdir, experiment, rule) / layout.Training.DONE
    return json.loads(done.read_text()) if done.is_file() else None


# ------------------------------------------------------------------ FLOPs per training image


def count_flops(step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def baseline_flops_per_image(cfg: dict, batch: int = 2) -> float:
    """Forward + backward of the classifier as phase 1 trains it (same frozen/trainable parameters)."""
    import torch

    from streetvision.models.spec import build_trainable_classifier

    model, _ = build_trainable_classifier(cfg["model"])
    model.train()
    images = torch.randn(batch, 3, cfg["model"]["img_size"], cfg["model"]["img_size"])
    return count_flops(lambda: model(images).float().sum().backward()) / batch


def explora_flops_per_image(cfg: dict, batch: int = 2) -> float:
    """One ExPLoRA training step (teacher on the global crops, student on all, backward) per image."""
    import torch

    from streetvision.models.backbone import any_size_copy, build_backbone, patch_size
    from streetvision.train.explora import (
        DinoSettings,
        ExploraModule,
        LoraSettings,
        add_lora,
        local_crop_side,
    )

    ex_cfg, size = cfg["explora"], cfg["model"]["img_size"]
    lora, dino = section_settings(LoraSettings, ex_cfg), section_settings(DinoSettings, ex_cfg)
    backbone = build_backbone(cfg["model"])
    local = local_crop_side(ex_cfg["local_crop_size"], size, patch_size(backbone))
    if local != size:
        backbone = any_size_copy(backbone, cfg["model"])
    module = ExploraModule(add_lora(backbone, lora), dino).train()
    crops = [torch.randn(batch, 3, size, size) for _ in range(2)]
    crops += [torch.randn(batch, 3, local, local) for _ in range(ex_cfg["n_local_crops"])]
    with warnings.catch_warnings():  # self.log outside a Trainer: harmless here
        warnings.simplefilter("ignore")
        return count_flops(lambda: module.training_step(crops, 0).backward()) / batch


def device_peak_tflops() -> tuple[str | None, float | None]:
    try:
        name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True, check=True).stdout.splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        return None, None
    return name, next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


# ------------------------------------------------------------------ report


def phase_rows(workdir: Path, experiment: str, flops: dict, peak_tflops: float | None) -> list[list[str]]:
    rows = []
    for rule in PHASES:
        seconds = job_seconds(workdir, experiment, rule)
        if seconds is None:
            continue
        record = training_record(workdir, experiment, rule) if rule in TRAINING else None
        rate = peak = mfu = wait = "-"
        if record and record.get("train_seconds"):
            images_per_s = record["train_samples"] / record["train_seconds"]
            rate = f"{images_per_s:,.0f}"
            if record.get("peak_gpu_memory_bytes"):
                peak = f"{record['peak_gpu_memory_bytes'] / 2**30:.1f} GiB"
            if peak_tflops and rule in flops:
                mfu = f"{flops[rule] * images_per_s / (peak_tflops * 1e12):.1%}"
        if record and record.get("loader_wait_fraction") is not None:  # TrainingClock's sampled steps
            wait = (f"{record['loader_wait_fraction']:.0%}:{record['mean_batch_wait_s'] * 1e3:.1f}/"
                    f"{record['mean_step_s'] * 1e3:.1f}ms")
        rows.append([f"{experiment}/{rule}", f"{seconds:.1f}", rate, peak, mfu, wait])
    return rows


def print_table(rows: list[list[str]]) -> None:
    # loader wait: the sampled steps' share of time waiting for their batch: mean wait / mean step
    header = ["phase", "job wall s", "train img/s", "peak GPU mem", "MFU", "loader-wait:wait/step"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).rjust(width) if i else str(cell).ljust(width)
                        for i, (cell, width) in enumerate(zip(row, widths, strict=True))))


def training_windows(workdir: Path, experiments: list[str]) -> list[tuple[str, str, str]]:
    windows = []
    for experiment in experiments:
        manifest = json.loads((phase_dir(workdir, experiment, "baseline") / layout.MANIFEST).read_text())
        windows.append((experiment, manifest["started_at"], manifest["finished_at"]))
    return windows


def synthesize_stage(workdir: Path, *, cpu_check: bool, images: int) -> None:
    """Stage 3: one shard; the validators' models when cached (GPU run), else the tests' tiny ones."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    sys.path.insert(0, str(REPO / "tests"))
    from synthesize import resolved, shard_figures

    from streetvision.synthesize.models import MissingModelError, check_models

    settings = resolved({"synthesize": {"enabled": True, "count": images}})["synthesize"]
    try:
        if cpu_check:
            raise MissingModelError("--cpu-check: tiny models")
        check_models(settings)
        which = "SDXL base 1.0 + BLIP-2 + Llama 3.1 8B 4-bit (validator settings)"
    except MissingModelError as err:
        from tiny_models import build_tiny_models

        models = build_tiny_models(workdir / "models")
        settings = resolved({"synthesize": {
            "enabled": True, "count": images, "steps": 4, "captioner": models["captioner"],
            "rewriter": models["rewriter"], "t2i": {"model": models["sdxl"], "width": 64, "height": 64},
            "i2i": {"model": models["sdxl"]}}})["synthesize"]
        which = f"tiny random pipeline ({err})"
    metrics = shard_figures(settings, workdir)
    gib = 2**30
    peak = metrics["peak_gpu_memory_bytes"]
    after = metrics["gpu_memory_after_stage_bytes"] or {}
    print(f"\nstage 3: one synthesize shard, {which}")
    print(f"  {metrics['images']} images in {metrics['seconds']:.1f} s: {metrics['images_per_s']:.3f} images/s "
          f"(captioner and LLM included); peak GPU memory "
          f"{f'{peak / gib:.2f} GiB' if peak is not None else '- (CPU)'}")
    for stage in ("captions", "prompts", "images"):
        allocated = after.get(stage)
        print(f"  after {stage}: {f'{allocated / gib:.3f} GiB' if allocated is not None else '-'} still allocated")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-check", action="store_true",
                        help="tiny sizes on CPU, no MFU: checks the script")
    parser.add_argument("--workdir", type=Path, help="where the runs go (default: a new temporary folder)")
    parser.add_argument("--images", type=int, help="synthetic labelled images (default 4000 on GPU)")
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--peak-tflops", type=float,
                        help="the device's dense bf16 peak (default: from its name)")
    parser.add_argument("--synthesize-images", type=int, default=8, help="images of the stage 3 shard")
    args = parser.parse_args()

    base = copy.deepcopy(CPU_CONFIG if args.cpu_check else GPU_CONFIG)
    if args.images:
        base["data"]["synthetic"]["count"] = args.images
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"workdir: {workdir}")

    name, peak = (None, None) if args.cpu_check else device_peak_tflops()
    peak = args.peak_tflops or peak
    if not args.cpu_check:
        print(f"device: {name or 'no GPU found'}; dense bf16 peak: "
              f"{f'{peak:g} TFLOP/s' if peak else 'unknown'}")
        if name is None:
            print("warning: no GPU visible; the rules fall back to CPU and the figures below are CPU figures")

    # FLOPs first (a few seconds on CPU), so that a problem there shows before the long runs.
    cfg = resolve_experiments(base, load_schema(REPO / "config/schema.yaml"))["smoke"]
    flops = {"baseline": baseline_flops_per_image(cfg), "explora": explora_flops_per_image(cfg)}

    single = workdir / "single"
    single.mkdir(exist_ok=True)
    stage1 = snakemake(single, base, args.cores)
    print(f"\nstage 1: one experiment through every phase, {stage1:.0f} s")
    for rule, value in flops.items():
        print(f"  {rule}: {value / 1e9:.3g} GFLOP per training image (forward + backward, counted)")
    print_table(phase_rows(single, "smoke", flops, peak))

    pair = workdir / "pair"
    pair.mkdir(exist_ok=True)
    both = deep_merge({k: v for k, v in base.items() if k != "experiments"},
                      {"experiments": {"pair_a": {}, "pair_b": {"train": {"seed": 1}}}})
    stage2 = snakemake(pair, both, args.cores)
    print(f"\nstage 2: two experiments at once with --resources gpu=1, {stage2:.0f} s")
    print_table([row for experiment in ("pair_a", "pair_b") for row in phase_rows(pair, experiment, flops,
                                                                                  peak)])
    windows = training_windows(pair, ["pair_a", "pair_b"])
    (_, start_a, end_a), (_, start_b, end_b) = windows
    overlap = max(start_a, start_b) < min(end_a, end_b)
    for experiment, start, end in windows:
        print(f"  {experiment} phase 1: {start} -> {end}")
    print(f"  phase 1 jobs {'OVERLAPPED (both on the GPU at once)' if overlap else 'took the GPU in turn'}")
    synthesize_stage(workdir / "synthesize", cpu_check=args.cpu_check, images=args.synthesize_images)
    if args.cpu_check:
        print("\n--cpu-check: CPU figures for the tiny model; no GPU was used and no MFU is computed")


if __name__ == "__main__":
    main()
