"""The model's deterministic input preprocessing (the bundle, phase 1 and the Hugging Face export share it).

What the model is *shown* — a clean image or a validator challenge — is decided in ``data/views.py``;
validator challenges themselves are simulated exactly in ``data/challenge.py``. This module only turns
a PIL image into the normalised tensor the model expects, with the same arithmetic as the stock NATIX
miner's transformers image processor, so that a Hugging Face export decides exactly like the bundle.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


class FloatResize:
    """Resize a uint8 image tensor to ``size`` x ``size`` in float32 and round back to uint8.

    Both sides go to ``size``, whatever the aspect ratio: the stock miner's processor (``size: {height,
    width}``) squashes a full-size level -1 challenge the same way.

    The arithmetic of torchvision's tensor ``functional.resize`` (v1: cast to float, antialiased
    interpolation, clamp after bicubic overshoot, round), which is what transformers 4.45.2's
    ``ViTImageProcessorFast`` -- the stock NATIX miner's preprocessing -- runs. torchvision's v2 uint8
    kernels (used by transformers >= 4.49) differ by up to 7 grey levels for bicubic 224 -> 64 px;
    at 224 -> 224 every variant is the identity.
    """

    def __init__(self, size: int, interpolation: str):
        self.size, self.mode = size, interpolation

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        target = (self.size, self.size)
        if target == (height, width):
            return image
        smooth = self.mode in ("bilinear", "bicubic")
        resized = torch.nn.functional.interpolate(
            image.unsqueeze(0).float(), size=target, mode=self.mode, antialias=smooth,
            align_corners=False if smooth else None)[0]
        return tv_tensors.wrap(resized.clamp_(0, 255).round_().to(torch.uint8), like=image)


def eval_transform(img_size: int, mean, std, interpolation: str = "bicubic"):
    """Deterministic: resize to img_size x img_size, normalise (the bundle uses the same).

    The resize follows the stock miner's transformers (see ``FloatResize``), so a model exported to
    Hugging Face sees the same pixels as here (exactly so in transformers 4.45.2, and at 224 px inputs).
    It is ``pixel_transform`` followed by ``normalize_transform``, which training runs apart.
    """
    return v2.Compose([*pixel_transform(img_size, interpolation).transforms,
                       *normalize_transform(mean, std).transforms])


def pixel_transform(img_size: int, interpolation: str = "bicubic"):
    """The first half of ``eval_transform``: PIL image -> the resized uint8 tensor (C, H, W)."""
    mode = interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bicubic"
    return v2.Compose([v2.ToImage(), FloatResize(img_size, mode)])


def normalize_transform(mean, std):
    """The second half of ``eval_transform``: uint8 -> normalised float32, per image or on a batch.
    Training runs it on the device, after the copy: a quarter of the bytes cross PCIe, and the loader
    workers skip it."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))])
