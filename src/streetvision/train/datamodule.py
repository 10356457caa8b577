"""Data loading from the data phase's index: lazy decoding in DataLoader workers."""

from __future__ import annotations

import lightning as L
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from streetvision.data.transforms import ValidatorAugment, eval_transform, level_transform


class IndexDataset(Dataset):
    """Rows of the index (id, path, label) -> (image tensor, label, row number)."""

    def __init__(self, frame: pd.DataFrame, transform):
        self.paths = frame["path"].tolist()
        labels = frame["label"].astype("float32") if frame["label"].notna().all() else frame["label"].fillna(-1)
        self.labels = torch.tensor(labels.to_numpy(dtype="float32"))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with Image.open(self.paths[i]) as image:
            tensor = self.transform(image.convert("RGB"))
        return tensor, self.labels[i], i


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
            raise ValueError(f"split '{name}' has no samples in the data index")
        return frame

    def _train_transform(self):
        size, mean, std = self.spec["img_size"], self.spec["mean"], self.spec["std"]
        levels = self.augment_levels
        if levels is None or sorted(levels) == [0, 1, 2, 3]:
            return ValidatorAugment(size, mean, std)
        chosen = [level_transform(level, size, mean, std) for level in levels]
        return lambda image: chosen[int(torch.randint(len(chosen), ()).item())](image)

    def _loader(self, frame: pd.DataFrame, transform, shuffle: bool) -> DataLoader:
        return DataLoader(IndexDataset(frame, transform), batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          drop_last=shuffle and len(frame) > self.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.split("train"), self._train_transform(), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.split("val_select"), self.eval_tf, shuffle=False)

    def eval_loader(self, split: str) -> DataLoader:
        return DataLoader(IndexDataset(self.split(split), self.eval_tf), batch_size=self.batch_size,
                          num_workers=self.num_workers, shuffle=False)
