"""What a training batch holds, for the callbacks that count samples."""

from __future__ import annotations

import torch


def batch_size(batch) -> int:
    """Samples in a batch: the leading size of its first tensor (the images, or a multi-crop's first crop)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, list | tuple) and batch:
        return batch_size(batch[0])
    return 0
