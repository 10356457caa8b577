"""What a synthesize run makes: image k's label, parent, task and diffusion seed come from (seed, k) and the
parent pool alone, so shard k mod shards makes the same images whatever the number of shards."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from streetvision.domains import GENERATED_DOMAIN
from streetvision.errors import StreetvisionError

TASKS = ("t2i", "i2i")


class SynthesizeError(StreetvisionError):
    """The synthesize step cannot run as configured (no parents of a label, shards that do not add up)."""


@dataclass(frozen=True)
class ImageDraw:
    number: int  # k in 0..count-1
    label: int  # the prompt's intent, as on validators (not a check of the pixels)
    parent_sha256: str
    task: str  # t2i | i2i
    seed: int  # the diffusion generator's seed


def parent_pool(index: pd.DataFrame) -> dict[int, list[str]]:
    """Labelled real images by label, sorted by content hash. A generated image (domain 'synthetic': ours
    or a configured source's) is never a parent."""
    labelled = index[index["label"].notna() & (index["domain"] != GENERATED_DOMAIN)]
    by_label = labelled.groupby(labelled["label"].astype(int))
    pool = {int(label): sorted(part["sha256"]) for label, part in by_label}
    missing = [label for label in (0, 1) if not pool.get(label)]
    if missing:
        raise SynthesizeError(f"synthesize: the ingested data has no real image with label {missing} to "
                              f"caption (domain {GENERATED_DOMAIN!r} images are never parents)")
    return pool


def draw_images(count: int, seed: int, i2i_share: float, pool: dict[int, list[str]]) -> list[ImageDraw]:
    draws = []
    for number in range(count):
        rng = np.random.default_rng([seed, number])
        label = int(rng.integers(2))  # 50/50, as validators draw it
        parents = pool[label]
        parent = parents[int(rng.integers(len(parents)))]
        task = "i2i" if rng.random() < i2i_share else "t2i"
        draws.append(ImageDraw(number, label, parent, task, int(rng.integers(2**31 - 1))))
    return draws


def shard_draws(draws: list[ImageDraw], shard: int, shards: int) -> list[ImageDraw]:
    if not 0 <= shard < shards:
        raise SynthesizeError(f"synthesize: shard {shard} is outside 0..{shards - 1} (synthesize.shards)")
    return [draw for draw in draws if draw.number % shards == shard]
