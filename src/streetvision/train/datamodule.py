"""Data for phase 1 from the data step's index: decoding (and challenge simulation) in DataLoader workers.

Training draws go through the exact validator challenge (``TrainingChallenge``), mixed by domain
(``DomainWeightedSampler``); early stopping and the exported predictions use the seeded challenge pass
(``EvaluationChallenge``), and the clean view is exported beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import pandas as pd
import torch
from torch.utils.data import DataLoader

from streetvision import layout
from streetvision.data.datasets import ImageDataset, as_given
from streetvision.data.transforms import eval_transform, normalize_transform, pixel_transform
from streetvision.data.views import CleanView, EvaluationChallenge, TrainingChallenge, samples_of
from streetvision.domains import domain_weights
from streetvision.errors import StreetvisionError
from streetvision.train.sampling import DomainWeightedSampler

VIEWS = layout.Baseline.VIEWS  # the challenge pass, the clean view


@dataclass(frozen=True)
class TrainingDraws:
    """What phase 1's loaders draw and how (from the ``train`` config section)."""

    batch_size: int
    num_workers: int  # resolved (trainer.loader_workers)
    prefetch_factor: int
    level_probs: list  # validator augmentation levels 0-3
    domain_weights: dict | None  # None: the validators' mix
    epoch_samples: int | None  # None: the size of the train split
    seed: int


class SplitDataModule(L.LightningDataModule):
    """Train on ``train`` (challenges, domain-weighted); early-stop on ``val_select``'s challenge pass;
    predict any split through either view."""

    def __init__(self, index: pd.DataFrame, data_spec: dict, draws: TrainingDraws, challenge_seed: int,
                 pin_memory: bool = False):
        super().__init__()
        self.index = index
        self.draws = draws
        self.pin_memory = pin_memory  # on CUDA: page-locked batches copy to the GPU asynchronously
        self.challenge_seed = challenge_seed
        self.preprocess = eval_transform(data_spec["img_size"], data_spec["mean"], data_spec["std"],
                                         data_spec["interpolation"])
        # training draws: the same preprocessing in two halves, the normalisation after the device copy
        self.train_pixels = pixel_transform(data_spec["img_size"], data_spec["interpolation"])
        self.normalize = normalize_transform(data_spec["mean"], data_spec["std"])
        train = self.split("train")
        domains = train["domain"].tolist() if "domain" in train else ["real"] * len(train)
        self.domain_weights = domain_weights(domains, draws.domain_weights)
        self._train_domains = domains

    def split(self, name: str) -> pd.DataFrame:
        frame = self.index[self.index["split"] == name].reset_index(drop=True)
        if frame.empty:
            raise StreetvisionError(f"split '{name}' has no samples in the data index")
        return frame

    def view(self, name: str, cache: bool = False):
        if name == "challenge":
            return EvaluationChallenge(self.challenge_seed, self.preprocess, cache=cache)
        if name == "clean":
            return CleanView(self.preprocess)
        raise ValueError(f"unknown view {name!r}; expected one of {VIEWS}")

    def dataset(self, frame: pd.DataFrame, transform) -> ImageDataset:
        return ImageDataset(samples_of(frame), transform, frame["label"].astype("float32").tolist(),
                            opener=as_given)

    def _loader(self, frame, transform, every_epoch: bool, sampler=None) -> DataLoader:
        workers, batch_size = self.draws.num_workers, self.draws.batch_size
        return DataLoader(self.dataset(frame, transform), batch_size=batch_size, sampler=sampler,
                          num_workers=workers, persistent_workers=workers > 0 and every_epoch,
                          prefetch_factor=self.draws.prefetch_factor if workers else None,
                          pin_memory=self.pin_memory,
                          drop_last=sampler is not None and len(sampler) > batch_size)

    def train_dataloader(self) -> DataLoader:
        train = self.split("train")
        trainer = self.trainer
        sampler = DomainWeightedSampler(self._train_domains, self.domain_weights,
                                        self.draws.epoch_samples or len(train), seed=self.draws.seed,
                                        rank=trainer.global_rank if trainer else 0,
                                        world_size=trainer.world_size if trainer else 1)
        challenge = TrainingChallenge(self.train_pixels, self.draws.level_probs, seed=self.draws.seed)
        return self._loader(train, challenge, every_epoch=True, sampler=sampler)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Training batches arrive as uint8 pixels (``train_pixels``): normalised here, on the device, which
        completes ``self.preprocess`` exactly; evaluation batches arrive normalised."""
        images, *rest = batch
        if images.dtype == torch.uint8:
            images = self.normalize(images)
        return [images, *rest]

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.split("val_select"), self.view("challenge", cache=True), every_epoch=True)

    def eval_loader(self, split: str, view: str = "challenge") -> DataLoader:
        return self._loader(self.split(split), self.view(view), every_epoch=False)
