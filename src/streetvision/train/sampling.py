"""Training draws mixed by domain the way validators mix their challenges (real / synthetic)."""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils.data import Sampler


class DomainWeightedSampler(Sampler[int]):
    """Draws (with replacement) so that each domain makes up its weight of the draws in expectation.

    Distributed: each of ``world_size`` ranks draws its own ``ceil(num_samples / world_size)`` indices with
    a generator seeded by (seed, epoch, rank), so ranks never duplicate each other's stream and together
    draw one epoch; ``set_epoch`` (called by Lightning) gives every epoch new draws.
    """

    def __init__(self, domains: list[str], weights: dict[str, float], num_samples: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        counts = Counter(domains)
        self.probabilities = torch.tensor([weights[d] / counts[d] for d in domains], dtype=torch.float64)
        self.per_rank = -(-num_samples // world_size)
        self.seed, self.rank, self.epoch = seed, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 7_919 + self.rank)
        yield from torch.multinomial(self.probabilities, self.per_rank, replacement=True,
                                     generator=generator).tolist()
