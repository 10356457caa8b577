"""What the validators' cache re-save changes in a challenge: the same challenge built from a source's own bytes
and from the bytes a validator holds after its cache step (``challenge.validator_cache``: a JPEG re-saved at
quality 75).

    python benchmarks/validator_cache.py [--sources 12]

Photo-like 1920x1080 JPEG sources at quality 95 and 85 (what data sets ship); for each, levels 0-3 with the
same drawn parameters, rendered exactly (``exact=True``); PSNR and mean |Δ| in grey levels of the 224x224
challenge with vs without the re-save (before the wire JPEG, and as sent), beside what the wire JPEG itself
(q75) costs the challenge. One line per source quality, medians over sources and levels.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import photo_like_jpeg  # noqa: E402

from streetvision.data import challenge as ch  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def decoded(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=12)
    args = parser.parse_args()
    print(f"{args.sources} sources of 1920x1080 per quality, levels 0-3, exact rendering; medians")
    print(f"{'source':<12} {'re-save: PSNR dB':>17} {'mean |Δ|':>9} {'as sent: PSNR dB':>17} {'mean |Δ|':>9} "
          f"{'wire q75 alone: PSNR dB':>24} {'source re-save size':>20}")
    for quality in (95, 85):
        rows = []
        for seed in range(args.sources):
            original = photo_like_jpeg(seed, 1920, 1080, quality=quality)
            cached = ch.validator_cache(original)
            for level in range(4):
                params = ch.draw_challenge_params(1920, 1080, level=level, rng=seed * 7 + level)
                before, _ = ch.render_challenge(original, params, rng=seed, exact=True)
                after, _ = ch.render_challenge(cached, params, rng=seed, exact=True)
                sent_before = decoded(ch.encode_challenge_jpeg(before))
                sent_after = decoded(ch.encode_challenge_jpeg(after))
                rows.append((psnr(before, after), np.abs(before.astype(int) - after).mean(),
                             psnr(sent_before, sent_after), np.abs(sent_before.astype(int) - sent_after).mean(),
                             psnr(before, sent_before), len(cached) / len(original)))
        m = np.median(np.array(rows), axis=0)
        print(f"JPEG q{quality:<7} {m[0]:17.1f} {m[1]:9.2f} {m[2]:17.1f} {m[3]:9.2f} {m[4]:24.1f} {m[5]:23.0%}")


if __name__ == "__main__":
    main()
