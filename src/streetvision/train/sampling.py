"""Training draws mixed by domain the way validators mix their challenges (real / synthetic)."""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils.data import Sampler

from streetvision.errors import StreetvisionError

VALIDATOR_MIX = {"real": 0.5, "synthetic": 0.5}


def domain_weights(domains, configured: dict | None) -> dict[str, float]:
    """The share of training draws per domain present, summing to 1.

    ``configured`` (``train.domain_weights``) names domains explicitly (domains it omits get 0); None means
    the validators' 0.5 / 0.5 when the domains present are exactly real and synthetic, else uniform.
    """
    present = sorted(set(domains))
    if configured:
        unknown = sorted(set(configured) - set(present))
        if unknown:
            raise StreetvisionError(f"config key 'train.domain_weights': unknown domain(s) {unknown}; the train "
                                    f"split has {present}")
        weights = {domain: float(configured.get(domain, 0.0)) for domain in present}
    elif set(present) == set(VALIDATOR_MIX):
        weights = dict(VALIDATOR_MIX)
    else:
        weights = dict.fromkeys(present, 1.0)
    total = sum(weights.values())
    if total <= 0:
        raise StreetvisionError(f"config key 'train.domain_weights': {configured} gives no domain a positive weight")
    return {domain: weight / total for domain, weight in weights.items()}


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
        yield from torch.multinomial(self.probabilities, self.per_rank, replacement=True, generator=generator).tolist()
