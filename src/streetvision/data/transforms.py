"""Image transforms: the NATIX validator's augmentation levels for training, and a deterministic eval.

Validators perturb each query image with one of four levels, drawn uniformly:
- L0: centre square crop + resize;
- L1: rotation ±20°, RandomResizedCrop (scale 0.2–1, square), horizontal and vertical flips;
- L2: L1 + saturation factor in [0, 0.4], contrast factor in [0.35, 0.85], JPEG re-encoding after
  downsampling by 2–6×;
- L3: L2 + gaussian noise (variance 0.001–0.05 on [0, 1] pixels) + gaussian blur (kernel 7–21 px).
Pixel-scale parameters (downsampling, blur kernel) are stated for 224 px inputs and scaled to the
model's input size, so a 64 px demo model sees the same relative degradation. All randomness comes
from torch's RNG, so a seeded generator reproduces a level exactly (used by the report).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

REFERENCE_SIZE = 224
LEVELS = (0, 1, 2, 3)


@dataclass(frozen=True)
class ValidatorAugmentParams:
    rotation_degrees: float = 20.0
    crop_scale: tuple[float, float] = (0.2, 1.0)
    saturation: tuple[float, float] = (0.0, 0.4)
    contrast: tuple[float, float] = (0.35, 0.85)
    jpeg_downsample: tuple[float, float] = (2.0, 6.0)
    jpeg_quality: int = 75
    noise_variance: tuple[float, float] = (0.001, 0.05)
    blur_kernel: tuple[int, int] = (7, 21)


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * torch.rand(()).item()


class SquareCentreCrop:
    def __call__(self, image):
        height, width = F.get_size(image)
        return F.center_crop(image, [min(height, width)])


class JpegDownsample:
    """Downsample by a random factor, JPEG-encode, decode and upsample back (a lossy relay)."""

    def __init__(self, factor: tuple[float, float], quality: int, scale: float):
        self.factor, self.quality, self.scale = factor, quality, scale

    def __call__(self, image: Image.Image) -> Image.Image:
        factor = max(1.0, _uniform(*self.factor) * self.scale)
        small = image.resize((max(1, round(image.width / factor)), max(1, round(image.height / factor))),
                             Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        small.convert("RGB").save(buffer, format="JPEG", quality=self.quality)
        buffer.seek(0)
        return Image.open(buffer).convert("RGB").resize(image.size, Image.Resampling.BILINEAR)


class GaussianNoise:
    """Additive noise on a [0, 1] float tensor with a random variance."""

    def __init__(self, variance: tuple[float, float]):
        self.variance = variance

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        std = math.sqrt(_uniform(*self.variance))
        return (tensor + torch.randn_like(tensor) * std).clamp_(0.0, 1.0)


class RandomGaussianBlur:
    """Blur with an odd kernel drawn from the (scaled) range; sigma follows OpenCV's kernel rule."""

    def __init__(self, kernel: tuple[int, int], scale: float):
        self.low = max(3, int(round(kernel[0] * scale)) | 1)
        self.high = max(self.low, int(round(kernel[1] * scale)) | 1)

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        size = int(torch.randint(self.low // 2, self.high // 2 + 1, ()).item()) * 2 + 1
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
        return F.gaussian_blur(tensor, [size, size], [sigma, sigma])


def level_transform(level: int, img_size: int, mean, std, params: ValidatorAugmentParams | None = None,
                    normalize: bool = True):
    """The validator's augmentation at one level, ending in a (normalised) float tensor."""
    p = params or ValidatorAugmentParams()
    scale = img_size / REFERENCE_SIZE
    if level == 0:
        steps = [SquareCentreCrop(), v2.Resize(img_size, antialias=True)]
    else:
        steps = [
            v2.RandomRotation(p.rotation_degrees),
            v2.RandomResizedCrop(img_size, scale=p.crop_scale, ratio=(1.0, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
        ]
    if level >= 2:
        steps += [v2.ColorJitter(saturation=p.saturation, contrast=p.contrast),
                  JpegDownsample(p.jpeg_downsample, p.jpeg_quality, scale)]
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if level >= 3:
        steps += [GaussianNoise(p.noise_variance), RandomGaussianBlur(p.blur_kernel, scale)]
    if normalize:
        steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    return v2.Compose(steps)


class ValidatorAugment:
    """Training transform: one of the four validator levels, drawn uniformly per image."""

    def __init__(self, img_size: int, mean, std, params: ValidatorAugmentParams | None = None):
        self.levels = [level_transform(level, img_size, mean, std, params) for level in LEVELS]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.levels[int(torch.randint(len(self.levels), ()).item())](image)


class FloatResize:
    """Resize the short side of a uint8 image tensor in float32 and round back to uint8.

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
        short, long = min(height, width), max(height, width)
        long = int(self.size * long / short)
        target = (self.size, long) if height <= width else (long, self.size)
        if target == (height, width):
            return image
        smooth = self.mode in ("bilinear", "bicubic")
        resized = torch.nn.functional.interpolate(
            image.unsqueeze(0).float(), size=target, mode=self.mode, antialias=smooth,
            align_corners=False if smooth else None)[0]
        return tv_tensors.wrap(resized.clamp_(0, 255).round_().to(torch.uint8), like=image)


def eval_transform(img_size: int, mean, std, interpolation: str = "bicubic"):
    """Deterministic: resize the short side, centre crop, normalise (the bundle uses the same).

    The resize follows the stock miner's transformers (see ``FloatResize``), so a model exported to
    Hugging Face sees the same pixels as here for square inputs.
    """
    mode = interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bicubic"
    return v2.Compose([
        v2.ToImage(),
        FloatResize(img_size, mode),
        v2.CenterCrop(img_size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ])
