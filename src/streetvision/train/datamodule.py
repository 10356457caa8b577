"""Data for phase 1 from the data step's index: lazy decoding in DataLoader workers."""

from __future__ import annotations

import lightning as L
import pandas as pd
import torch
from torch.utils.data import DataLoader

from streetvision.data.datasets import ImageDataset
from streetvision.data.transforms import ValidatorAugment, eval_transform, level_transform
from streetvision.errors import StreetvisionError


def labelled_dataset(frame: pd.DataFrame, transform) -> ImageDataset:
    return ImageDataset(frame["path"].tolist(), transform, frame["label"].astype("float32").tolist())


class SplitDataModule(L.LightningDataModule):
    """Train on ``train`` with validator augmentation; early-stop on ``val_select``; predict any split."""

    def __init__(self, index: pd.DataFrame, data_spec: dict, batch_size: int, num_workers: int,
                 augment_levels: list[int] | None = None):
        super().__init__()
        self.index = index
        self.spec = data_spec
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.augment_levels = augment_levels
        self.eval_tf = eval_transform(data_spec["img_size"], data_spec["mean"], data_spec["std"],
                                      data_spec["interpolation"])

    def split(self, name: str) -> pd.DataFrame:
        frame = self.index[self.index["split"] == name].reset_index(drop=True)
        if frame.empty:
            raise StreetvisionError(f"split '{name}' has no samples in the data index")
        return frame

    def _train_transform(self):
        size, mean, std = self.spec["img_size"], self.spec["mean"], self.spec["std"]
        levels = self.augment_levels
        if levels is None or sorted(levels) == [0, 1, 2, 3]:
            return ValidatorAugment(size, mean, std)
        chosen = [level_transform(level, size, mean, std) for level in levels]
        return lambda image: chosen[int(torch.randint(len(chosen), ()).item())](image)

    def _loader(self, frame: pd.DataFrame, transform, shuffle: bool, every_epoch: bool) -> DataLoader:
        return DataLoader(labelled_dataset(frame, transform), batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0 and every_epoch,
                          drop_last=shuffle and len(frame) > self.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.split("train"), self._train_transform(), shuffle=True, every_epoch=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.split("val_select"), self.eval_tf, shuffle=False, every_epoch=True)

    def eval_loader(self, split: str) -> DataLoader:
        return self._loader(self.split(split), self.eval_tf, shuffle=False, every_epoch=False)
