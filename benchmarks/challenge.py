"""Challenge simulation per image on one core: the validator's own path vs streetvision.data.challenge.

Sources are 1920x1080 JPEGs (quality 90): a demo street scene upscaled, with sensor-like grain. Paths:
- validator: tests/natix_reference.py, the validator's steps literally (full decode -> float tensor ->
  rotate the whole image -> RandomResizedCrop -> distortions -> ToPILImage -> JPEG);
- exact:     ours at full resolution (same pixels as the validator up to rounding ties);
- default:   ours, decoding at 1/2-1/8 scale when the crop keeps >= 336 source pixels (Image.draft);
- store:     ours from the reduced training store's copy (data.store: reduced, JPEG 95, 4:4:4) plus the original size;
- raw:       ours from the raw store's copy (data.store: reduced_raw, the same pixels uncompressed, .npy).
Each measurement alternates the paths so machine noise hits all alike; times are medians in ms.
Then the trade: for the same parameters, each fast path's 224x224 array against the exact one (PSNR,
mean absolute difference, mean brightness bias and sharpness ratio), beside what the validator's own
JPEG q75 encoding costs; and level -1 rendered in training from the raw store copy against the full-size
fallback validators send, after the model's 224 px resize.

    python benchmarks/challenge.py [--sources 4] [--reps 6]
"""

from __future__ import annotations

import argparse
import io
import math
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import natix_reference as ref  # noqa: E402
from helpers import photo_like_jpeg  # noqa: E402

from streetvision.data import challenge as ch  # noqa: E402

SIZE = (1920, 1080)


def store_files(data: bytes) -> tuple[bytes, bytes]:
    """The training store's copies, exactly as ingest makes them: data.store reduced (JPEG) and reduced_raw."""
    return ch.store_copy_bytes(data, "reduced")[0], ch.store_copy_bytes(data, "reduced_raw")[0]


def read_raw(data: bytes) -> np.ndarray:
    return ch.load_raw(io.BytesIO(data))


def paths(source: bytes, store: tuple[bytes, bytes], level: int | None, seed: int) -> dict:
    reference_level = level if level is not None else ref.draw_reference_level(numpy_random=np.random.RandomState(seed))
    return {
        "validator": lambda: ref.reference_jpeg(Image.open(io.BytesIO(source)), reference_level),
        "exact": lambda: ch.simulate_challenge(source, level=level, rng=seed, exact=True),
        "default": lambda: ch.simulate_challenge(source, level=level, rng=seed),
        "store": lambda: ch.simulate_challenge(store[0], level=level, rng=seed, source_size=SIZE),
        "raw": lambda: ch.simulate_challenge(read_raw(store[1]), level=level, rng=seed, source_size=SIZE),
    }


def time_paths(sources, stores, level: int | None, reps: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {}
    for rep in range(reps):
        for index, (source, store) in enumerate(zip(sources, stores, strict=True)):
            for name, run in paths(source, store, level, seed=rep * 1000 + index).items():
                start = time.perf_counter()
                run()
                samples.setdefault(name, []).append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in samples.items()}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def sharpness(rgb: np.ndarray) -> float:
    grey = rgb.astype(float).mean(axis=2)
    return np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean()


def trade(sources, stores, n_params: int) -> dict[str, list[tuple[float, float, float, float]]]:
    rows: dict[str, list] = {}
    for index, (source, store) in enumerate(zip(sources, stores, strict=True)):
        for k in range(n_params):
            params = ch.draw_challenge_params(*SIZE, level=k % 2, rng=index * 100 + k)  # geometry only
            exact, _ = ch.render_challenge(source, params, exact=True)
            candidates = {
                "default": ch.render_challenge(source, params)[0],
                "store": ch.render_challenge(store[0], params)[0],
                "raw": ch.render_challenge(read_raw(store[1]), params)[0],
                "JPEG q75 of exact": np.asarray(Image.open(io.BytesIO(ch.encode_challenge_jpeg(exact))).convert("RGB")),
            }
            for name, array in candidates.items():
                rows.setdefault(name, []).append((psnr(exact, array),
                                                  np.abs(exact.astype(int) - array).mean(),
                                                  array.mean() - exact.mean(),
                                                  sharpness(array) / sharpness(exact)))
    return rows


def fallback_trade(sources) -> list[tuple[float, float]]:
    """Level -1 in training from the raw store: the copy sent unaugmented at its own size, against the
    full-size cached image validators send; (PSNR, mean |d|) after the model's 224 px resize."""
    from streetvision.data.transforms import pixel_transform

    model_view = pixel_transform(ch.TARGET_SIZE)
    rows = []
    for source in sources:
        cached = ch.validator_cache(source)
        raw = read_raw(ch.store_copy_bytes(cached, "reduced_raw")[0])
        full = model_view(Image.fromarray(ch.challenge_pixels(cached, level=-1))).numpy().transpose(1, 2, 0)
        copy = model_view(Image.fromarray(ch.challenge_pixels(raw, level=-1, source_size=SIZE)))
        copy = copy.numpy().transpose(1, 2, 0)
        rows.append((psnr(full, copy), float(np.abs(full.astype(float) - copy).mean())))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=int, default=4)
    parser.add_argument("--reps", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    sources = [photo_like_jpeg(seed, *SIZE, quality=90) for seed in range(args.sources)]
    stores = [store_files(source) for source in sources]
    print(f"{args.sources} sources {SIZE[0]}x{SIZE[1]} JPEG q90 "
          f"(~{np.mean([len(s) for s in sources]) / 1e3:.0f} kB), "
          f"store copies {ch.store_size(*SIZE)}: JPEG q95 ~{np.mean([len(s[0]) for s in stores]) / 1e3:.0f} kB, "
          f"raw {np.mean([len(s[1]) for s in stores]) / 1e3:.0f} kB; one core")

    print("\nmedian ms per image (ratio = validator / path)")
    names = ("exact", "default", "store", "raw")
    print(f"{'level':>8} " + " ".join(f"{name:>18}" for name in ("validator", *names)))
    for level in (None, 0, 1, 2, 3):
        times = time_paths(sources, stores, level, args.reps)
        cells = [f"{times['validator']:18.1f}"] + [
            f"{times[name]:8.1f} ({times['validator'] / times[name]:5.1f}x)" for name in names]
        print(f"{'drawn' if level is None else level:>8} " + " ".join(cells))

    print("\ntrade, same parameters, levels 0 and 1 (224x224 arrays against the exact path, before JPEG)")
    print(f"{'':>20} {'PSNR dB':>8} {'mean |d|':>9} {'bias':>6} {'sharpness':>10}")
    for name, rows in trade(sources, stores, n_params=6).items():
        values = np.array(rows)
        print(f"{name:>20} {values[:, 0].mean():8.1f} {values[:, 1].mean():9.2f} {values[:, 2].mean():6.2f} "
              f"{values[:, 3].mean():10.3f}")

    fallback = np.array(fallback_trade(sources))
    print(f"\nlevel -1 from the raw store copy vs the full-size fallback, after the model's 224 px resize: "
          f"PSNR {fallback[:, 0].min():.1f}-{fallback[:, 0].max():.1f} dB, "
          f"mean |d| {fallback[:, 1].min():.2f}-{fallback[:, 1].max():.2f} ({len(sources)} sources)")


if __name__ == "__main__":
    main()
