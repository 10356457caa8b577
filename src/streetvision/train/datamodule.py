"""Data for phase 1 from the data step's index: lazy decoding (and challenge simulation) in DataLoader workers.

Training draws go through the exact validator challenge (``TrainingChallenge``), mixed by domain
(``DomainWeightedSampler``); early stopping and the exported predictions use the seeded challenge pass
(``EvaluationChallenge``), and the clean view is exported beside it.
"""

from __future__ import annotations

import lightning as L
import pandas as pd
from torch.utils.data import DataLoader

from streetvision.data.datasets import ImageDataset
from streetvision.data.transforms import eval_transform
from streetvision.data.views import CleanView, EvaluationChallenge, TrainingChallenge, samples_of
from streetvision.domains import domain_weights
from streetvision.errors import StreetvisionError
from streetvision.train.sampling import DomainWeightedSampler

VIEWS = ("challenge", "clean")


def _identity(item):
    return item


class SplitDataModule(L.LightningDataModule):
    """Train on ``train`` (challenges, domain-weighted); early-stop on ``val_select``'s challenge pass;
    predict any split through either view."""

    def __init__(self, index: pd.DataFrame, data_spec: dict, train_cfg: dict, challenge_seed: int):
        super().__init__()
        self.index = index
        self.cfg = train_cfg
        self.challenge_seed = challenge_seed
        self.preprocess = eval_transform(data_spec["img_size"], data_spec["mean"], data_spec["std"],
                                         data_spec["interpolation"])
        train = self.split("train")
        domains = train["domain"].tolist() if "domain" in train else ["real"] * len(train)
        self.domain_weights = domain_weights(domains, train_cfg["domain_weights"])
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
        return ImageDataset(samples_of(frame), transform, frame["label"].astype("float32").tolist(), opener=_identity)

    def _loader(self, frame, transform, every_epoch: bool, sampler=None) -> DataLoader:
        workers = self.cfg["num_workers"]
        return DataLoader(self.dataset(frame, transform), batch_size=self.cfg["batch_size"], sampler=sampler,
                          num_workers=workers, persistent_workers=workers > 0 and every_epoch,
                          drop_last=sampler is not None and len(sampler) > self.cfg["batch_size"])

    def train_dataloader(self) -> DataLoader:
        train = self.split("train")
        trainer = self.trainer
        sampler = DomainWeightedSampler(self._train_domains, self.domain_weights,
                                        self.cfg["epoch_samples"] or len(train), seed=self.cfg["seed"],
                                        rank=trainer.global_rank if trainer else 0,
                                        world_size=trainer.world_size if trainer else 1)
        challenge = TrainingChallenge(self.preprocess, self.cfg["level_probs"], seed=self.cfg["seed"])
        return self._loader(train, challenge, every_epoch=True, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.split("val_select"), self.view("challenge", cache=True), every_epoch=True)

    def eval_loader(self, split: str, view: str = "challenge") -> DataLoader:
        return self._loader(self.split(split), self.view(view), every_epoch=False)
