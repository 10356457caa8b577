"""The one image Dataset: files decoded lazily (in DataLoader workers), transformed, optionally labelled."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from streetvision.data.images import to_rgb


def open_rgb(path: str) -> Image.Image:
    """The image decoded as 8-bit RGB (``data.images.to_rgb``: 16-bit, alpha and palette images too)."""
    with Image.open(path) as image:
        rgb = to_rgb(image)
        rgb.load()
        return rgb


def as_given(item):
    """An opener for items that are not paths (e.g. ``views.Sample``s): the view opens them itself."""
    return item


class ImageDataset(Dataset):
    """``paths[i]`` -> ``transform(image)``; with ``labels``, ``(transform(image), label, i)``.

    ``transform`` takes the opened PIL image (still lazy, so a JPEG can be draft-decoded) and returns
    whatever the model consumes: a tensor, or a list of crops for self-supervised training.
    """

    def __init__(self, paths: Sequence[str], transform: Callable, labels: Sequence[float] | None = None,
                 opener: Callable[[str], Image.Image] = open_rgb):
        self.paths = list(paths)
        self.labels = None if labels is None else torch.as_tensor(list(labels), dtype=torch.float32)
        self.transform, self.opener = transform, opener

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        item = self.transform(self.opener(self.paths[i]))
        return item if self.labels is None else (item, self.labels[i], i)


def image_batches(paths: Sequence[str], transform: Callable, batch_size: int = 64):
    """Batches of transformed images (tensors stacked), in order, for inference outside a DataLoader."""
    for start in range(0, len(paths), batch_size):
        yield torch.stack([transform(open_rgb(p)) for p in paths[start:start + batch_size]])
