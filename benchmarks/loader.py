"""Can the CPUs feed the GPU? The training view (a fresh validator challenge + the model's preprocessing)
per core, from the cached original vs from the reduced stores (``data.store``: JPEG 95, raw pixels), for 1080p and 12 MP sources,
and the same view through PIL's JPEG codec and image objects (the path before ``challenge_pixels``); then a
real DataLoader with N workers, and the cores needed to feed DINOv2-S/B/L at 40 % MFU.

    python benchmarks/loader.py [--images 24] [--workers 2] [--peak-tflops 989]

All in one run, so the ratios compare like with like on whatever load the machine has; per-core rates are
in the process's CPU time (a shared VM's steal and other load do not count; the DataLoader rate is wall
time), interleaved over rounds. The baseline of issue #23 (``simulate_challenge`` from a JPEG 95 store copy,
the code at ``--baseline``, loaded from git) runs beside them: the issue asks for 2.2x its rate. FLOPs per
training image are counted (forward + backward, ``torch.utils.flop_counter``) on the random-init timm models.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import io
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

SOURCES = {"1080p": (1920, 1080), "12 MP": (4032, 3024)}
BACKBONES = {"DINOv2-S/14": "vit_small_patch14_dinov2", "DINOv2-B/14": "vit_base_patch14_dinov2",
             "DINOv2-L/14": "vit_large_patch14_dinov2"}
MFU = 0.4


STORES = ("original", "reduced", "reduced_raw")  # data.store
ISSUE_BASELINE = "2477a92"  # the commit issue #23 measured (its 274 img/s from a store copy)


def make_store(root: Path, size: tuple[int, int], count: int) -> dict[str, list]:
    """``count`` photo-like sources, as each ``data.store`` gives them to training: the validators' cache
    copy of each, and its reduced store copies (JPEG 95; raw pixels)."""
    from helpers import photo_like_jpeg

    from streetvision.data import challenge as ch
    from streetvision.data.views import Sample

    samples = {store: [] for store in STORES}
    for i in range(count):
        cached = ch.validator_cache(photo_like_jpeg(i, *size))
        original = root / f"{size[0]}_{i}.jpg"
        original.write_bytes(cached)
        samples["original"].append(Sample(str(original), i, *size))
        level0 = root / f"{size[0]}_{i}{ch.LEVEL0_SUFFIX}"  # the reduced stores' level-0 challenge
        level0.write_bytes(ch.level0_challenge_jpeg(cached))
        for store in STORES[1:]:
            copy = root / f"{size[0]}_{i}{ch.STORE_SUFFIXES[store]}"
            copy.write_bytes(ch.store_copy_bytes(cached, store)[0])
            samples[store].append(Sample(str(original), i, *size, train_path=str(copy), level0_path=str(level0)))
    return samples


def training_view(seed: int):
    """What a loader worker runs (phase 1's datamodule), its draws from ``seed``: the normalisation runs on the
    device after the copy."""
    from streetvision.data.transforms import pixel_transform
    from streetvision.data.views import TrainingChallenge

    return TrainingChallenge(pixel_transform(224), [0.25, 0.25, 0.25, 0.25], seed=seed)


def pil_training_view(seed: int):
    """The training view as it was before ``challenge_pixels``: the challenge JPEG encoded and decoded by PIL,
    handed to the preprocessing as a PIL image (the same pixels; the baseline of the codec's speed-up)."""
    view = training_view(seed)

    def through_pil(sample):
        source, size = (sample.path, None) if sample.train_path is None else (sample.train_path,
                                                                              (sample.width, sample.height))
        challenge = view.challenge(source, source_size=size, fallback=sample.fallback)
        return view.preprocess(challenge.convert("RGB"))
    return through_pil


def per_core_rates(views: dict, rounds: int = 9) -> dict[str, list[float]]:
    """Views per CPU second of each ``name -> (make_view, inputs)`` in each of ``rounds`` passes over the
    inputs. ``make_view(seed)`` draws its challenges from ``seed``, and round r gives every path seed r: all
    paths render the same levels and crops in a round (with 24 inputs the level mix alone moves a round's
    cost by +-15 %), interleaved, so that a slow spell of the machine hits all of them. An untimed pass over
    every round first fills the caches (lazy imports, per-size resize weights) as a long training has."""
    for make_view, inputs in views.values():
        for seed in range(rounds):
            view = make_view(seed)
            for item in inputs:
                view(item)
    rates = {name: [] for name in views}
    for seed in range(rounds):
        for name, (make_view, inputs) in views.items():
            view = make_view(seed)
            started = time.process_time()
            for item in inputs:
                view(item)
            rates[name].append(len(inputs) / (time.process_time() - started))
    return rates


def paired_ratio(rates: dict[str, list[float]], name: str, reference: str) -> float:
    """The median over rounds of ``name``'s rate over ``reference``'s (the same challenges in a round)."""
    return statistics.median(a / b for a, b in zip(rates[name], rates[reference], strict=True))


def issue_baseline(revision: str, samples: list, size: tuple[int, int], root: Path):
    """(view, inputs) of issue #23's measured path: ``simulate_challenge`` at ``revision`` from a JPEG 95
    copy made by that revision's ``store_copy``; None when git cannot show that revision. Its challenge is
    left as the issue timed it (a lazily opened JPEG, neither decoded nor preprocessed), so a ratio against
    it is conservative."""
    try:
        source = subprocess.run(["git", "-C", str(REPO), "show", f"{revision}:src/streetvision/data/challenge.py"],
                                capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = root / "baseline_challenge.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("baseline_challenge", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    copies = []
    for sample in samples:
        copy, _ = module.store_copy(Path(sample.path).read_bytes())
        buffer = io.BytesIO()
        copy.save(buffer, format="JPEG", quality=95)
        copies.append(buffer.getvalue())
    def make_view(seed: int):
        rng = module.np.random.default_rng(seed)  # its draws are the same as training_view(seed)'s
        return lambda data: module.simulate_challenge(data, rng=rng, source_size=size)
    return make_view, copies


def loader_rate(view, samples, workers: int, batch: int = 16, batches: int = 12) -> float:
    import torch
    from torch.utils.data import DataLoader, Dataset

    class Views(Dataset):
        def __len__(self):
            return batch * batches

        def __getitem__(self, i):
            return view(samples[i % len(samples)])

    loader = DataLoader(Views(), batch_size=batch, num_workers=workers, persistent_workers=workers > 0,
                        prefetch_factor=4 if workers else None)
    iterator = iter(loader)
    next(iterator)  # workers started
    started = time.perf_counter()
    seen = sum(len(images) for images in iterator)
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    return seen / (time.perf_counter() - started)


def flops_per_training_image(backbone: str, img_size: int = 224) -> float:
    import timm
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = timm.create_model(backbone, pretrained=False, img_size=img_size, num_classes=1)
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.randn(1, 3, img_size, img_size)).sum().backward()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24, help="sources per size")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100/H200: 989)")
    parser.add_argument("--baseline", default=ISSUE_BASELINE, help="the git revision of the issue's path")
    args = parser.parse_args()

    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    root = Path(tempfile.mkdtemp(prefix="bench-loader-"))
    print(f"training view (challenge at the validators' level mix + 224 px uint8 tensor), one core, "
          f"{args.images} sources per size; ratios are medians over rounds of the same challenges")
    rates = {}
    for name, size in SOURCES.items():
        samples = make_store(root, size, args.images)
        views = {store: (training_view, samples[store]) for store in STORES}
        views["through PIL"] = (pil_training_view, samples["reduced_raw"])
        views["level 0 rendered"] = (training_view, [dataclasses.replace(sample, level0_path=None)
                                                     for sample in samples["reduced_raw"]])
        baseline = issue_baseline(args.baseline, samples["original"], size, root)
        if baseline is not None:
            views["issue baseline"] = baseline
        measured = per_core_rates(views)
        rate = {path: statistics.median(values) for path, values in measured.items()}
        rates[name] = rate["reduced_raw"]

        def ratio(reference, measured=measured):
            return paired_ratio(measured, "reduced_raw", reference)
        print(f"  {name:6s} " + "   ".join(f"{store} {rate[store]:5.0f} img/s" for store in STORES)
              + f"   (raw {ratio('reduced'):.2f}x reduced, {ratio('original'):.2f}x original)")
        codec = paired_ratio(measured, "level 0 rendered", "through PIL")  # both render level 0
        print(f"         the same view through PIL's JPEG and image objects {rate['through PIL']:.0f} img/s: "
              f"OpenCV's codec {codec:.2f}x (both rendering level 0)")
        print(f"         reduced_raw rendering level 0 again instead of decoding its stored challenge "
              f"{rate['level 0 rendered']:.0f} img/s: the stored one {ratio('level 0 rendered'):.2f}x")
        if baseline is None:
            print(f"         (issue baseline: git cannot show {args.baseline} here)")
        else:
            print(f"         issue #23's path at {args.baseline} (simulate_challenge from a JPEG 95 copy) "
                  f"{rate['issue baseline']:.0f} img/s: raw store view {ratio('issue baseline'):.2f}x "
                  f"(the issue asks 2.2x)")
        if name == "1080p":
            workers = loader_rate(training_view(0), samples["reduced_raw"], args.workers)
            single = loader_rate(training_view(0), samples["reduced_raw"], 0)
            print(f"  DataLoader, reduced_raw store, 1080p: {workers:6.0f} img/s with {args.workers} workers "
                  f"({workers / single:.2f}x the main process alone, {single:.0f} img/s)")
    shutil.rmtree(root, ignore_errors=True)
    print(f"\ncores needed at {MFU:.0%} MFU of {args.peak_tflops:g} TFLOP/s (counted forward + backward at 224 px),"
          f" reduced_raw store")
    for label, backbone in BACKBONES.items():
        flops = flops_per_training_image(backbone)
        needed = MFU * args.peak_tflops * 1e12 / flops
        cores = ", ".join(f"{name} {needed / rate:.0f}" for name, rate in rates.items())
        print(f"  {label}: {flops / 1e9:.1f} GFLOP/image -> {needed:,.0f} img/s -> cores: {cores}")


if __name__ == "__main__":
    main()
