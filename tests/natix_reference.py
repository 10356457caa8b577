"""A literal, slow re-implementation of how a NATIX validator turns a source image into a challenge.

Test-only (tests/test_challenge.py, benchmarks/challenge.py). It follows the validator's steps one by
one, with the same libraries and number types, so that the fast simulator in
``streetvision.data.challenge`` can be checked against it:

    PIL image -> RGB -> float CHW tensor in [0, 1]
    level 0:  centre square crop and Resize(224) on the PIL image, then the tensor
    level >0: torchvision ``functional.rotate(tensor, angle)`` at its defaults (nearest, no expand,
              zeros outside) -> RandomResizedCrop(224, scale=(0.2, 1), ratio=(1, 1)) whose box is moved
              towards ``mask_center`` (reading the CHW shape's (H, W) as (width, height)) ->
              horizontal/vertical "flips" that never flip -> DeeperForensics distortions, each on a
              uint8 BGR copy of the tensor (truncating ``x * 255``) and back to a float RGB tensor
    ToPILImage (truncating ``x * 255``) -> JPEG with PIL's defaults (quality 75, 4:2:0)

Written from reading natixnetwork/streetvision-subnet (natix/utils/image_transforms.py,
natix/validator/forward.py, natix/protocol.py); no code is copied from there. Every random draw can be
given explicitly, so a test can hand this path and the fast one the same parameters.
"""

from __future__ import annotations

import io
import math
import random
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import functional as F

SIZE = 224
STUDIO_LUMA = (16.0, 235.0)
STUDIO_CHROMA = (16.0, 240.0)
PARAMETERS = {
    "CS": [0.4, 0.3, 0.2, 0.1, 0.0],
    "CC": [0.85, 0.725, 0.6, 0.475, 0.35],
    "JPEG": [2, 3, 4, 5, 6],
    "GNC": [0.001, 0.002, 0.005, 0.01, 0.05],
    "GB": [7, 9, 13, 17, 21],
}
# Which distortions each level runs, in order, and the highest level random.randint may draw for them.
LEVEL_DISTORTIONS = {2: (("CS", 1), ("CC", 1), ("JPEG", 1)),
                     3: (("CS", 2), ("CC", 2), ("JPEG", 2), ("GNC", 2), ("GB", 2))}


# --- DeeperForensics maths on uint8 BGR arrays (the validator's helpers, restated) ---

def _bgr_to_studio_ycbcr(bgr_uint8: np.ndarray) -> np.ndarray:
    """OpenCV's float YCrCb of the 0-255 BGR values, reordered Y, Cb, Cr, then squeezed to studio range.

    The input is 0-255 floats, so OpenCV's float chroma offset (0.5) applies, and the "studio" scaling
    maps 0-255 to roughly 0.06-219: both quirks cancel on the way back, but they set GNC's noise scale.
    """
    ycrcb = cv2.cvtColor(bgr_uint8.astype(np.float32), cv2.COLOR_BGR2YCrCb)
    ycbcr = ycrcb[:, :, [0, 2, 1]].astype(np.float32)
    low, high = STUDIO_LUMA
    ycbcr[:, :, 0] = (ycbcr[:, :, 0] * (high - low) + low) / 255.0
    low, high = STUDIO_CHROMA
    ycbcr[:, :, 1:] = (ycbcr[:, :, 1:] * (high - low) + low) / 255.0
    return ycbcr


def _studio_ycbcr_to_bgr(ycbcr: np.ndarray) -> np.ndarray:
    values = ycbcr.astype(np.float32)
    low, high = STUDIO_LUMA
    values[:, :, 0] = (values[:, :, 0] * 255.0 - low) / (high - low)
    low, high = STUDIO_CHROMA
    values[:, :, 1:] = (values[:, :, 1:] * 255.0 - low) / (high - low)
    ycrcb = values[:, :, [0, 2, 1]].astype(np.float32)
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR)


def saturation(bgr: np.ndarray, factor: float, noise_rng=None) -> np.ndarray:
    ycbcr = _bgr_to_studio_ycbcr(bgr)
    ycbcr[:, :, 1:] = 0.5 + (ycbcr[:, :, 1:] - 0.5) * factor
    return _studio_ycbcr_to_bgr(ycbcr).astype(np.uint8)  # no clip: the validator casts directly


def darken(bgr: np.ndarray, factor: float, noise_rng=None) -> np.ndarray:
    return (bgr.astype(np.float32) * factor).astype(np.uint8)


def down_up(bgr: np.ndarray, factor: int, noise_rng=None) -> np.ndarray:
    height, width = bgr.shape[:2]
    small = cv2.resize(bgr, (width // factor, height // factor))
    return cv2.resize(small, (width, height))


def colour_noise(bgr: np.ndarray, variance: float, noise_rng=None) -> np.ndarray:
    noise_rng = noise_rng if noise_rng is not None else np.random.default_rng()
    scaled = _bgr_to_studio_ycbcr(bgr) / 255
    noisy = (scaled + math.sqrt(variance) * noise_rng.standard_normal(scaled.shape)) * 255
    return np.clip(_studio_ycbcr_to_bgr(noisy), 0, 255).astype(np.uint8)


def blur(bgr: np.ndarray, kernel: int, noise_rng=None) -> np.ndarray:
    return cv2.GaussianBlur(bgr, (kernel, kernel), kernel / 6)


OPERATIONS = {"CS": saturation, "CC": darken, "JPEG": down_up, "GNC": colour_noise, "GB": blur}


def distort_tensor(tensor: torch.Tensor, kind: str, level: int, noise_rng=None) -> torch.Tensor:
    """One distortion as the validator wraps it: RGB float tensor -> uint8 BGR -> op -> RGB float tensor."""
    if level == 0:
        return tensor
    bgr = (tensor[[2, 1, 0]].permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
    out = OPERATIONS[kind](bgr, PARAMETERS[kind][level - 1], noise_rng=noise_rng)
    return torch.from_numpy(out.astype(np.float32) / 255.0).permute(2, 0, 1)[[2, 1, 0]]


def distort_rgb(rgb: np.ndarray, kind: str, level: int, noise_rng=None) -> np.ndarray:
    """``distort_tensor`` on a uint8 RGB array, for comparing single distortions."""
    tensor = transforms.ToTensor()(Image.fromarray(rgb))
    return np.asarray(transforms.ToPILImage()(distort_tensor(tensor, kind, level, noise_rng)))


# --- geometry ---

def keep_point(box, point, tensor: torch.Tensor):
    """The validator's move of the crop box towards ``point`` (x, y), with its width/height swap."""
    top, left, height, width = box
    x, y = point
    swapped_width, swapped_height = tensor.shape[1:]  # (H, W) of a CHW tensor, read as (width, height)
    if x < left:
        left = max(0, x - 10)
    elif x > left + width:
        left = min(swapped_width - width, x - width + 10)
    if y < top:
        top = max(0, y - 10)
    elif y > top + height:
        top = min(swapped_height - height, y - height + 10)
    return top, left, height, width


def _no_flip(tensor: torch.Tensor, flip, params: dict) -> torch.Tensor:
    """The validator's flip step: its params dict exists from construction and never says to flip."""
    return flip(tensor) if params.get("do_flip", False) else tensor


def reference_array(image: Image.Image, level: int, *, angle: float | None = None, crop_box=None,
                    mask_center=None, distortions: dict | None = None, noise_rng=None,
                    py_random: random.Random | None = None) -> tuple[np.ndarray, dict]:
    """The 224x224 uint8 RGB array the validator would encode, and the parameters it used.

    ``crop_box`` is RandomResizedCrop's (top, left, height, width) *before* the mask-centre move;
    missing parameters are drawn as the validator draws them (torch RNG for geometry, ``py_random``
    for distortion levels, ``noise_rng`` for GNC).
    """
    rgb = image.convert("RGB")
    used = {"level": level}
    if level == 0:
        side = min(rgb.size)
        tensor = transforms.ToTensor()(transforms.Resize((SIZE, SIZE))(transforms.CenterCrop(side)(rgb)))
    else:
        tensor = transforms.ToTensor()(rgb)
        if angle is None:
            angle = transforms.RandomRotation.get_params([-20.0, 20.0])
        tensor = F.rotate(tensor, angle)
        if crop_box is None:
            crop_box = transforms.RandomResizedCrop.get_params(tensor, [0.2, 1.0], [1.0, 1.0])
        box = keep_point(crop_box, mask_center, tensor) if mask_center is not None else crop_box
        tensor = F.resized_crop(tensor, *box, [SIZE, SIZE], transforms.InterpolationMode.BILINEAR,
                                antialias=True)
        tensor = _no_flip(tensor, F.hflip, {})
        tensor = _no_flip(tensor, F.vflip, {})
        used.update(angle=angle, drawn_crop_box=tuple(crop_box), crop_box=tuple(box))
        py_random = py_random or random.Random()
        drawn = {}
        for kind, highest in LEVEL_DISTORTIONS.get(level, ()):
            kind_level = distortions[kind] if distortions is not None else py_random.randint(0, highest)
            drawn[kind] = kind_level
            tensor = distort_tensor(tensor, kind, kind_level, noise_rng)
        used["distortions"] = drawn
    return np.asarray(transforms.ToPILImage()(tensor)), used


def reference_jpeg(image: Image.Image, level: int, **params) -> tuple[bytes, dict]:
    """The bytes the validator base64-encodes and sends (PIL's default JPEG settings)."""
    array, used = reference_array(image, level, **params)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG")
    return buffer.getvalue(), used


def draw_reference_level(level_probs=None, numpy_random=np.random) -> int:
    """The validator's level draw: one uniform number against the cumulative probabilities."""
    level_probs = level_probs or {0: 0.25, 1: 0.25, 2: 0.25, 3: 0.25}
    value, cumulative = numpy_random.random(), 0.0
    for level, probability in sorted(level_probs.items()):
        cumulative += probability
        if value <= cumulative:
            return level
    return max(level_probs)


# --- before the challenge: the cache step, the row metadata and the fallback (natix/validator/cache/extract.py,
# image_cache.py, forward.py) ---

def reference_cache(image_bytes: bytes, folder) -> Path:
    """extract.py: open the row's bytes with PIL and save them under the name of PIL's format, at its defaults."""
    image = Image.open(io.BytesIO(image_bytes))
    path = Path(folder) / f"shard__image_0.{(image.format or 'png').lower()}"
    image.save(path)
    return path


def reference_metadata(shard) -> list[dict]:
    """Each row's JSON sidecar, read back: pandas values, json.dumps where it works, else str(value)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(shard)
    frame = table.to_pandas()
    # The subnet's lock file (spring 2025) resolves pandas 2.x, where a null of a string column is None; pandas
    # >= 3 (installed here) reads it as NaN. Restore the validators' view.
    for field in table.schema:
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            frame[field.name] = frame[field.name].astype(object).where(frame[field.name].notna(), None)
    rows = []
    for _, row in frame.iterrows():
        meta = {}
        for column in frame.columns:
            if "image" in column:
                continue
            value = row[column]
            try:
                json.dumps({column: value})
                meta[column] = value
            except (TypeError, OverflowError):
                meta[column] = str(value)
        rows.append(json.loads(json.dumps(meta)))
    return rows


def reference_augmentation_raises(mask_center, level: int = 1) -> bool:
    """forward.py's try: the level's augmentation with the sidecar's mask_center; True when it raises."""
    image = Image.new("RGB", (64, 48), (120, 120, 120))
    try:
        reference_array(image, level, mask_center=mask_center, crop_box=(5, 5, 30, 30), angle=0.0)
    except Exception:  # noqa: BLE001 - the validator catches every exception here
        return True
    return False


def reference_fallback_jpeg(cached_path) -> bytes:
    """Level -1: the cached image as PIL opens it, sent as a JPEG at PIL's defaults (prepare_image_synapse)."""
    buffer = io.BytesIO()
    Image.open(cached_path).save(buffer, format="JPEG")
    return buffer.getvalue()


def reference_row_served(label: int, meta: dict) -> bool:
    """image_cache.py's sample(label): skip rows whose description disagrees with the label, by presence."""
    description = meta.get("scene_description")
    if label == 0 and description:
        return False
    return not (label == 1 and not description)
