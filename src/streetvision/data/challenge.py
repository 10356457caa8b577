"""The NATIX validator's challenge, simulated exactly and fast: from a source image to what a miner decodes.

A validator (natixnetwork/streetvision-subnet: natix/utils/image_transforms.py, natix/validator/forward.py,
natix/protocol.py; see /work/shared/NATIX.md §1) turns a source image into a challenge like this:

1. RGB; one augmentation level drawn with probability 0.25 each (``LEVEL_PROBS``).
2. Level 0: centre square crop (side = the shorter side), PIL bilinear resize to 224x224.
   Levels 1-3: on the *full* image, a rotation by an angle uniform in [-20, 20] degrees, nearest
   neighbour, same size, black corners; then a square RandomResizedCrop (scale 0.2-1 of the image's
   area, torchvision's 10 tries then a centre crop of the shorter side), moved towards the row's
   ``mask_center`` if it has one, and an antialiased bilinear resize of the crop to 224x224 on floats.
   The flip transforms of that pipeline never flip, so nothing here flips.
3. Level 2 runs CS, CC, JPEG, each at a level drawn from {0, 1}; level 3 runs CS, CC, JPEG, GNC, GB,
   each at a level drawn from {0, 1, 2} (0 = skipped). See ``apply_distortion`` for their maths.
4. The image (a float tensor, truncated by ``x * 255`` to uint8) is sent as a JPEG with PIL's defaults
   (quality 75, 4:2:0 chroma subsampling): every challenge is a 224x224 JPEG.

Public API:

- ``validator_cache(image_bytes)``: the bytes a validator's cache step keeps of a real image;
- ``simulate_challenge(image, *, level=None, rng=None, mask_center=None, level_probs=None, exact=False,
  fallback=False)`` -> ``(PIL JPEG image as the miner opens it, info)``: the whole path in one call;
- ``draw_challenge_params(width, height, ...)`` and ``render_challenge(image, params, ...)``: the same path
  split into the random draws and the deterministic rendering (an evaluation pass can store the params);
- ``apply_distortion(rgb, kind, level, rng=None)``: one DeeperForensics distortion on a uint8 RGB array;
- ``encode_challenge_jpeg(rgb)``: the validator's JPEG encoding of a 224x224 uint8 RGB array;
- ``challenge_pixels(image, ...)``: ``simulate_challenge``'s challenge as the miner decodes it (RGB pixels),
  the training path (``miner_decoded``: OpenCV's JPEG round trip where it gives PIL's pixels exactly);
- ``ChallengeTransform``: a picklable DataLoader transform (one fresh challenge per call, per-worker RNG);
- ``store_size`` / ``store_copy`` / ``store_copy_bytes`` / ``load_raw`` / ``level0_challenge_jpeg``: the
  training stores (``data.store``; see "Speed").

Exactness. With ``exact=True`` the rendering reproduces the validator's pixels: the same OpenCV and
torch operations in the same number types, including its truncations; measured against a literal,
slow re-implementation of the validator (tests/natix_reference.py) the only differences are a few
pixels where nearest-neighbour rotation meets a rounding tie (cv2's fixed point vs torch's float), and
GNC's noise, which is the same distribution but not the same draws.

Speed (the default, ``exact=False``). The validator converts the whole image to a float tensor and
rotates all of it, then throws most of it away. Here only the crop window is rotated (one
``cv2.warpAffine`` per challenge, uint8), and when the crop is at least 2x, 4x or 8x larger than
``MIN_DECODED_CROP`` (336 = 1.5 x 224) pixels, a lazily opened JPEG is decoded at that reduced scale (JPEG
DCT scaling via ``Image.draft``) so that the crop keeps at least 336 source pixels across. The resize to
224 (levels 1-3) is the validator's float arithmetic with torch's own weights as two sparse matrix
products (``_resize_fast_from_columns``: bit-equal but for last-bit ties, within 1 grey level); level 0
runs torch's uint8 kernel, which rounds as PIL does (within 1 grey level of PIL). That changes pixels a
little, not the distribution of geometry or distortions: the parameters are always drawn on the
full-resolution size, exactly as the validator draws them (benchmarks/challenge.py measures the speed-up
and the pixel difference). Decoding then dominates; the training stores cut it (``data.store``, made at
ingest by ``store_copy_bytes``: the smallest size at which every possible crop still has 336 pixels across,
as JPEG 95 or, ``reduced_raw``, as raw pixels that need no decoding; parameters are still drawn on the
original size). Level 0 draws nothing but its level, so both stores also keep each image's level-0 challenge
as the validator sends it (``level0_challenge_jpeg``, exact; made by the data steps): a training view that
draws level 0 decodes it (``challenge_pixels(level0_jpeg=...)``) instead of rendering it again.
Evaluation never reads the stores: the challenge pass renders exactly from the cached original.
Training views then skip PIL: the 224 px JPEG round trip runs in OpenCV's codec, checked to give PIL's
pixels exactly (``miner_decoded``).

Before the challenge: the cache step. A validator builds challenges from its cached copy of a real image,
not from the data set's bytes: ``validator_cache`` re-saves the image in its own format at PIL's defaults
(a JPEG becomes a new JPEG at quality 75); generated images are cached as lossless PNG.

Level -1, the fallback. When the augmentation raises, the validator sends the cached image unaugmented, at
full size and any aspect ratio, as a JPEG at PIL's defaults (``encode_fallback_jpeg``); the stock miner's
processor then squashes it to 224x224. Reading the subnet's code, that is what happens at levels 1-3 to
every row with a ``mask_center``: whatever form a shard stores it in, the value that reaches the crop after
the cache's JSON round trip cannot be unpacked as a point (``natix.validators_fall_back``), so no
validator ever moves a crop towards a mask centre. ``fallback=True`` (the index's ``level_fallback``) turns
a drawn level 1-3 into level -1; ``level=-1`` asks for it directly.

Quirks reproduced on purpose:

- ``mask_center`` (x, y), when given as numbers (no data path does: see level -1), moves the crop so the
  point is (about 10 px) inside it, but the validator reads the tensor's (height, width) as (width,
  height): the horizontal offset is capped at ``height - side`` and the vertical one at ``width - side``.
  A point near the right edge of a landscape image is then not inside the crop, and a point near (or
  below) the bottom edge pulls the crop partly or wholly below the image: rows outside the image are black
  (torchvision pads crops with zeros). Coordinates must be integers.
- Truncation (not rounding) wherever floats become uint8; CC is a plain darkening; "JPEG" is a
  bilinear down- and up-resize (no JPEG codec); CS and GNC go through OpenCV's float YCrCb with a
  studio-range rescale applied to 0-255 values, which sets GNC's noise scale (std about 297*sqrt(v) on
  luma, 290*sqrt(v) on each chroma channel, in 0-255 units).
- EXIF orientation is ignored (the validator never transposes).
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from streetvision.data.images import to_rgb

# torch is imported by the functions that render: the data step makes store copies with this module and
# stays light (no torch in a CPU-only step).

TARGET_SIZE = 224
FALLBACK_LEVEL = -1  # the validators' level when the augmentation raises: the image sent unaugmented
LEVEL_PROBS = {0: 0.25, 1: 0.25, 2: 0.25, 3: 0.25}
ROTATION_DEGREES = 20.0
CROP_SCALE = (0.2, 1.0)
CROP_TRIES = 10  # torchvision RandomResizedCrop.get_params
MASK_MARGIN = 10

DISTORTION_KINDS = ("CS", "CC", "JPEG", "GNC", "GB")
DISTORTION_PARAMETERS = {
    "CS": (0.4, 0.3, 0.2, 0.1, 0.0),  # chroma factor
    "CC": (0.85, 0.725, 0.6, 0.475, 0.35),  # brightness factor
    "JPEG": (2, 3, 4, 5, 6),  # down-and-up resize factor
    "GNC": (0.001, 0.002, 0.005, 0.01, 0.05),  # noise variance in the validator's scaled YCbCr units
    "GB": (7, 9, 13, 17, 21),  # Gaussian kernel size; sigma = size / 6
}
# The distortions a level runs, in order, with the highest level the validator draws for each.
LEVEL_DISTORTIONS = {
    0: (),
    1: (),
    2: (("CS", 1), ("CC", 1), ("JPEG", 1)),
    3: (("CS", 2), ("CC", 2), ("JPEG", 2), ("GNC", 2), ("GB", 2)),
}
DECODE_REDUCTIONS = (8, 4, 2)  # the scales libjpeg can decode at
# A reduced decode must keep this many source pixels across the crop. At 224 (the output size) the
# double filtering (DCT scaling, then the antialiased resize) softens challenges by about 2% in mean
# gradient; at 1.5x that it is under 1%, for about 15% more time (benchmarks/challenge.py).
MIN_DECODED_CROP = 336

# OpenCV's float YCrCb is followed by a "studio range" rescale: value * (high - low) + low, / 255.
_STUDIO_LOW = 16.0
_STUDIO_SPAN = np.array([235.0 - 16.0, 240.0 - 16.0, 240.0 - 16.0], dtype=np.float32)  # Y, Cr, Cb


@dataclass(frozen=True)
class ChallengeParams:
    """Everything a validator draws for one challenge (geometry in full-resolution source pixels).

    ``crop_box`` is (top, left, height, width) in the rotated image, after the mask-centre move;
    ``drawn_crop_box`` is RandomResizedCrop's own draw. Both are None at level 0.
    """

    level: int
    source_size: tuple[int, int]  # (width, height)
    angle: float | None = None
    crop_box: tuple[int, int, int, int] | None = None
    drawn_crop_box: tuple[int, int, int, int] | None = None
    distortions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DISTORTION_KINDS, 0))


# --- random draws ---

def _generator(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check_level_probs(level_probs: Mapping[int, float]) -> dict[int, float]:
    probs = {int(level): float(p) for level, p in level_probs.items()}
    if not set(probs) <= set(LEVEL_DISTORTIONS) or any(p < 0 for p in probs.values()):
        raise ValueError(f"level_probs must map levels 0-3 to probabilities >= 0; got {dict(level_probs)}")
    if not math.isclose(sum(probs.values()), 1.0, rel_tol=1e-9):
        raise ValueError(f"level_probs must sum to 1; got {sum(probs.values())}")
    return dict(sorted(probs.items()))


@functools.lru_cache(maxsize=64)
def _level_cdf(level_probs: tuple[tuple[int, float], ...]) -> tuple[tuple[int, ...], np.ndarray]:
    probs = _check_level_probs(dict(level_probs))
    cumulative = np.cumsum(list(probs.values()))
    return tuple(probs), cumulative / cumulative[-1]


def _draw_crop(width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params with ratio (1, 1): area-uniform square side, 10 tries."""
    area = width * height
    for _ in range(CROP_TRIES):
        side = int(round(math.sqrt(area * rng.uniform(*CROP_SCALE))))
        if 0 < side <= width and 0 < side <= height:
            return int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1)), side, side
    side = min(width, height)  # the fallback: a centre crop of the shorter side
    return (height - side) // 2, (width - side) // 2, side, side


def _integer_point(mask_center) -> tuple[int, int]:
    try:
        x, y = mask_center
    except (TypeError, ValueError):
        raise ValueError(f"mask_center must be an (x, y) pair; got {mask_center!r}") from None
    if any(float(v) != int(v) for v in (x, y)):
        raise ValueError(f"mask_center must hold integer pixel coordinates; got {mask_center!r}")
    return int(x), int(y)


def move_crop_to_point(box, point, width: int, height: int) -> tuple[int, int, int, int]:
    """The validator's mask-centre move of a (top, left, height, width) box, with its width/height swap.

    The bounds it clamps to are ``height - box width`` for the left edge and ``width - box height`` for the
    top edge (it unpacks a CHW tensor's (H, W) as (width, height)); see the module docstring.
    """
    top, left, box_height, box_width = box
    x, y = point
    if x < left:
        left = max(0, x - MASK_MARGIN)
    elif x > left + box_width:
        left = min(height - box_width, x - box_width + MASK_MARGIN)
    if y < top:
        top = max(0, y - MASK_MARGIN)
    elif y > top + box_height:
        top = min(width - box_height, y - box_height + MASK_MARGIN)
    return top, left, box_height, box_width


def draw_challenge_params(width: int, height: int, *, level: int | None = None, rng=None, mask_center=None,
                          level_probs: Mapping[int, float] | None = None,
                          fallback: bool = False) -> ChallengeParams:
    """Draw a challenge's level, rotation, crop and distortion levels as a validator does.

    ``level=None`` draws it from ``level_probs`` (default ``LEVEL_PROBS``); ``level=-1`` asks for the
    fallback (the unaugmented image); ``rng`` is a seed or a numpy Generator; ``mask_center`` is a numeric
    (x, y) in full-resolution pixels, or None (the data path never has one: see the module docstring).
    ``fallback``: the row's augmentation raises at levels 1-3 on a validator (``natix.validators_fall_back``),
    so a drawn level 1-3 becomes level -1.
    """
    if width < 1 or height < 1:
        raise ValueError(f"source size must be positive; got width={width}, height={height}")
    rng = _generator(rng)
    if level is None:
        probs = level_probs if level_probs is not None else LEVEL_PROBS
        levels, cumulative = _level_cdf(tuple((int(level), float(p)) for level, p in probs.items()))
        # numpy's ``rng.choice(levels, p=probs)`` draws exactly this (one ``random()`` against the
        # normalised cumulative sums), in a few microseconds instead of its ~20
        level = levels[int(cumulative.searchsorted(rng.random(), side="right"))]
    elif level not in LEVEL_DISTORTIONS and level != FALLBACK_LEVEL:
        raise ValueError(f"level must be -1, 0, 1, 2 or 3; got {level!r}")
    if level == FALLBACK_LEVEL or (fallback and level > 0):
        return ChallengeParams(level=FALLBACK_LEVEL, source_size=(width, height))
    if level == 0:
        return ChallengeParams(level=0, source_size=(width, height))
    angle = float(rng.uniform(-ROTATION_DEGREES, ROTATION_DEGREES))
    drawn = _draw_crop(width, height, rng)
    box = drawn
    if mask_center is not None:
        box = move_crop_to_point(drawn, _integer_point(mask_center), width, height)
    distortions = dict.fromkeys(DISTORTION_KINDS, 0)
    for kind, highest in LEVEL_DISTORTIONS[level]:
        distortions[kind] = int(rng.integers(0, highest + 1))
    return ChallengeParams(level, (width, height), angle, box, drawn, distortions)


# --- distortions (uint8 RGB in and out). The validator works on BGR copies; the colour conversions below
# do too, because OpenCV's RGB and BGR variants sum in a different order and would move a few truncations.
# The studio rescale runs on (3, H, W) planes: numpy is several times faster there than on HxWx3 broadcasts.

def _to_studio(rgb: np.ndarray) -> np.ndarray:
    """OpenCV's float YCrCb of 0-255 values (chroma offset 0.5) in studio range, as (3, H, W) planes: Y, Cr,
    Cb."""
    ycrcb = cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.float32), cv2.COLOR_BGR2YCrCb)
    planes = np.ascontiguousarray(ycrcb.transpose(2, 0, 1))  # one copy; cv2.split costs three times more
    planes *= _STUDIO_SPAN[:, None, None]
    planes += np.float32(_STUDIO_LOW)
    planes /= np.float32(255.0)
    return planes


def _from_studio(planes: np.ndarray) -> np.ndarray:
    """Back to BGR floats (not clipped); ``planes`` is used up."""
    planes *= np.float32(255.0)
    planes -= np.float32(_STUDIO_LOW)
    planes /= _STUDIO_SPAN[:, None, None]
    return cv2.cvtColor(cv2.merge(list(planes)), cv2.COLOR_YCrCb2BGR)


def _saturation(rgb, factor, rng):
    planes = _to_studio(rgb)
    chroma = planes[1:]
    chroma -= np.float32(0.5)
    chroma *= np.float32(factor)
    chroma += np.float32(0.5)
    # a convex mix of in-range values, so no clip (the validator has none either)
    return cv2.cvtColor(_from_studio(planes).astype(np.uint8), cv2.COLOR_BGR2RGB)


def _darken(rgb, factor, rng):
    return (rgb.astype(np.float32) * np.float32(factor)).astype(np.uint8)


def _resize_down_up(rgb, factor, rng):
    height, width = rgb.shape[:2]
    small = cv2.resize(rgb, (width // factor, height // factor), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def _colour_noise(rgb, variance, rng):
    import torch
    # torch draws normals about 3x faster than numpy; seeded from ``rng``, runs stay reproducible
    generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
    noise = torch.randn((3, *rgb.shape[:2]), generator=generator).numpy()
    noise *= np.float32(255.0 * math.sqrt(variance))  # the validator adds sqrt(v) * N(0, 1) to values / 255
    planes = _to_studio(rgb)
    planes += noise
    return cv2.cvtColor(np.clip(_from_studio(planes), 0, 255).astype(np.uint8), cv2.COLOR_BGR2RGB)


def _blur(rgb, kernel, rng):
    return cv2.GaussianBlur(rgb, (kernel, kernel), kernel / 6)


_DISTORTION_FUNCTIONS = {"CS": _saturation, "CC": _darken, "JPEG": _resize_down_up, "GNC": _colour_noise,
                         "GB": _blur}


def apply_distortion(rgb: np.ndarray, kind: str, level: int, rng=None) -> np.ndarray:
    """One DeeperForensics distortion at ``level`` 1-5 (0 returns ``rgb`` itself) on an HxWx3 uint8 RGB array.

    - ``CS``: chroma of OpenCV's float YCrCb (after the validator's studio-range rescale) pulled towards
      the middle by the factor, back to RGB, truncated to uint8;
    - ``CC``: every value multiplied by the factor and truncated (a darkening);
    - ``JPEG``: bilinear ``cv2.resize`` down to ``(w // f, h // f)`` and back up (no codec);
    - ``GNC``: Gaussian noise of std ``sqrt(v)`` added to the rescaled YCrCb divided by 255, clipped;
    - ``GB``: ``cv2.GaussianBlur`` with a ``k x k`` kernel and sigma ``k / 6``.
    ``rng`` (seed or numpy Generator) only matters for GNC.
    """
    if kind not in DISTORTION_PARAMETERS:
        raise ValueError(f"kind must be one of {', '.join(DISTORTION_KINDS)}; got {kind!r}")
    if level not in range(6):
        raise ValueError(f"level must be an integer 0-5; got {level!r}")
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be an HxWx3 uint8 array; got {getattr(rgb, 'dtype', type(rgb))} "
                         f"with shape {getattr(rgb, 'shape', None)}")
    if level == 0:
        return rgb
    parameter = DISTORTION_PARAMETERS[kind][level - 1]
    return _DISTORTION_FUNCTIONS[kind](rgb, parameter, _generator(rng))


# --- geometry and decoding ---

Source = Image.Image | np.ndarray  # a PIL image (lazily opened), or decoded uint8 RGB pixels (HxWx3)


def _open_source(image) -> Source:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        return _checked_pixels(image, "the array")
    if isinstance(image, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(bytes(image)))
    if isinstance(image, (str, Path)):
        return load_raw(image) if str(image).endswith(RAW_SUFFIX) else Image.open(image)
    raise ValueError(f"image must be a PIL image, a uint8 RGB array, a path or JPEG/PNG bytes; "
                     f"got {type(image).__name__}")


def _checked_pixels(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
        raise ValueError(f"{name} must hold HxWx3 uint8 RGB pixels; got {array.dtype} {array.shape}")
    return array


def _size(source: Source) -> tuple[int, int]:
    """(width, height)."""
    return source.size if isinstance(source, Image.Image) else (source.shape[1], source.shape[0])


def _pixels(source: Source) -> np.ndarray:
    return source if isinstance(source, np.ndarray) else np.asarray(to_rgb(source))  # no copy when RGB


def _as_image(source: Source) -> Image.Image:
    return source if isinstance(source, Image.Image) else Image.fromarray(source)


def _source_scale(source: Source, source_size: tuple[int, int], exact: bool) -> tuple[float, float]:
    """How much smaller ``source`` is than the full-resolution ``source_size`` (1.0 unless a reduced copy)."""
    width, height = source_size
    given_width, given_height = _size(source)
    if (given_width, given_height) == (width, height):
        return 1.0, 1.0
    # A reduced copy (see store_size) keeps the aspect ratio up to one pixel of rounding.
    aspect_ok = abs(given_width * height - given_height * width) <= max(width, height)
    if exact or given_width > width or given_height > height or not aspect_ok:
        hint = " (exact=True needs the full-resolution image)" if exact and aspect_ok else ""
        raise ValueError(f"image is {given_width}x{given_height} but params are for a "
                         f"{width}x{height} source{hint}")
    return given_width / width, given_height / height


def _reduction_for(side_pixels: float, exact: bool) -> int:
    """The largest decode reduction that keeps at least MIN_DECODED_CROP pixels across ``side_pixels``."""
    if exact:
        return 1
    return next((r for r in DECODE_REDUCTIONS if side_pixels / r >= MIN_DECODED_CROP), 1)


def _decode_rgb(source: Source, reduction: int) -> np.ndarray:
    """Decode to uint8 RGB, a lazily opened JPEG at about 1/``reduction`` of its size (DCT-domain scaling,
    nearly free); other sources in full (reducing the whole image would cost more than the rotation of the
    crop window at full size saves)."""
    if reduction > 1 and isinstance(source, Image.Image) and source.format == "JPEG":
        width, height = source.size
        source.draft("RGB", (width // reduction, height // reduction))  # a no-op once loaded
    return _pixels(source)


def _rotated_window(rgb: np.ndarray, scale_x: float, scale_y: float, params: ChallengeParams,
                    transposed: bool = False) -> np.ndarray:
    """The crop window of the rotated full-resolution image, sampled on an n x n grid (n >= 224 from a
    reduced copy or decode; the crop's own side at full resolution).

    One inverse-mapped ``warpAffine`` (nearest, black outside the source) does rotation, crop and the
    change of scale; window pixels outside the rotated frame are black, as torchvision pads crops.
    ``transposed``: the window's columns as rows (from swapped grid axes), which is what
    ``_resize_fast_from_columns`` reads. The same samples with OpenCV 5.1; OpenCV 4 rounds the per-column
    and per-row terms of its fixed-point map apart, so there a few samples in 10,000 move by one pixel.
    """
    width, height = params.source_size
    top, left, side, _ = params.crop_box
    n = side if scale_x == scale_y == 1.0 else max(TARGET_SIZE, round(side * min(scale_x, scale_y)))
    step = side / n
    # grid pixel (u, v) -> rotated-frame pixel (X, Y): X = left + (u + 0.5) * step - 0.5
    grid_to_frame = np.array([[step, 0.0, left + 0.5 * step - 0.5],
                              [0.0, step, top + 0.5 * step - 0.5],
                              [0.0, 0.0, 1.0]])
    if transposed:  # grid (u, v) samples what (v, u) samples untransposed
        grid_to_frame[:, :2] = grid_to_frame[:, 1::-1]
    # rotated-frame pixel -> source pixel: undo a counter-clockwise rotation about the image centre
    frame_to_source = np.vstack([cv2.invertAffineTransform(
        cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), params.angle, 1.0)), [0, 0, 1]])
    # full-resolution source pixel -> decoded pixel (pixel centres: x' = (x + 0.5) * s - 0.5)
    source_to_decoded = np.array([[scale_x, 0.0, 0.5 * scale_x - 0.5],
                                  [0.0, scale_y, 0.5 * scale_y - 0.5],
                                  [0.0, 0.0, 1.0]])
    grid_to_decoded = (source_to_decoded @ frame_to_source @ grid_to_frame)[:2]
    window = cv2.warpAffine(rgb, grid_to_decoded, (n, n), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    frame_index = np.floor(np.arange(n) * step + 0.5 * step)  # which frame pixel each grid row/column samples
    below, right = frame_index + top >= height, frame_index + left >= width  # past the frame's edges
    if transposed:
        window[:, below], window[right] = 0, 0
    else:
        window[below], window[:, right] = 0, 0
    return window


def _resize_like_validator(window: np.ndarray) -> np.ndarray:
    """Antialiased bilinear resize to 224 of [0, 1] floats (torchvision's tensor path); truncated ``x * 255``.

    Only the interpolation runs in torch (the same kernel as the validator's); the scaling runs in numpy,
    whose IEEE division and multiplication give the same floats without torch's per-op thread overhead.
    """
    import torch
    planar = np.ascontiguousarray(window.transpose(2, 0, 1)).astype(np.float32) / np.float32(255.0)
    resized = torch.nn.functional.interpolate(torch.from_numpy(planar)[None], size=(TARGET_SIZE, TARGET_SIZE),
                                              mode="bilinear", align_corners=False, antialias=True)[0].numpy()
    return np.ascontiguousarray((resized * np.float32(255.0)).astype(np.uint8).transpose(1, 2, 0))


def _resize_fast_from_columns(columns: np.ndarray) -> np.ndarray:
    """``_resize_like_validator`` of the window whose columns ``columns`` holds as rows (the transposed
    window: ``_rotated_window(..., transposed=True)``), at a quarter to a third of its cost: the same float32
    weights (read off torch's kernel by ``_antialias_weights``), the same pass order (horizontal, then
    vertical), the same ``/ 255``, ``* 255`` and truncation, as two sparse matrix products. The one
    difference: torch sums each pixel's taps with fused multiply-adds, scipy without, so a sum can differ
    in its last bit; that shows only where it lands within that bit of a whole grey level, which flat
    areas do (there, about one pixel in ten is one level off, either way; elsewhere one in a thousand or
    fewer; tests/test_challenge.py).
    """
    width, height = columns.shape[:2]
    # The horizontal pass as a vertical one on the transposed window: each sparse row then scales whole
    # contiguous rows of pixels (scipy's fast case); the transpose after it brings rows back.
    values = np.divide(columns.reshape(width, 3 * height), np.float32(255.0), dtype=np.float32)  # one pass
    across = _antialias_weights(width) @ values  # (224, 3 * height): the window's rows at 224 px
    rows = cv2.transpose(across.reshape(TARGET_SIZE, height, 3)).reshape(height, 3 * TARGET_SIZE)
    resized = _antialias_weights(height) @ rows  # (224, 3 * 224)
    return (resized * np.float32(255.0)).astype(np.uint8).reshape(TARGET_SIZE, TARGET_SIZE, 3)


@functools.lru_cache(maxsize=1024)  # one entry per window side: 10 kB at 336 px, 75 kB at 3024 px
def _antialias_weights(size: int):
    """torch's antialiased bilinear weights from ``size`` pixels to 224, as a (224, size) CSR matrix, read off
    the kernel itself, whatever torch version computes them: resized, a row of unit spikes ``span`` apart
    gives each output the weight of the one spike in its reach (it sums that weight times 1 and zeros).
    ``span`` rows, each offset by one, hit every input."""
    import torch
    from scipy.sparse import csr_array

    scale = size / TARGET_SIZE
    span = math.ceil(2 * max(scale, 1.0)) + 2  # wider than an output's reach (+-scale, or +-1 upsampling)
    spikes = torch.zeros((span, size), dtype=torch.float32)
    for offset in range(span):
        spikes[offset, offset::span] = 1.0
    responses = torch.nn.functional.interpolate(spikes[None, None], size=(span, TARGET_SIZE), mode="bilinear",
                                                align_corners=False, antialias=True)[0, 0].numpy()
    offsets, outputs = np.nonzero(responses)
    centres = scale * (outputs + 0.5) - 0.5  # the input pixel (fractional) each output is centred on
    inputs = offsets + span * np.round((centres - offsets) / span).astype(int)  # the spike in its reach
    return csr_array((responses[offsets, outputs], (outputs, inputs)), shape=(TARGET_SIZE, size))


def _centre_square(source: Source, params: ChallengeParams, exact: bool) -> tuple[np.ndarray, int]:
    """Level 0: the centre square of the shorter side resized to 224 (CenterCrop + Resize on PIL: bilinear,
    antialiased, rounded). Exact: PIL's own resize at full resolution. Otherwise torch's uint8 kernel (the
    same filter, rounded too: within 1 grey level of PIL's) on that square of a reduced-scale decode or of a
    store copy, its edges rounded to whole decoded pixels."""
    width, height = params.source_size
    side = min(width, height)
    top, left = int(round((height - side) / 2.0)), int(round((width - side) / 2.0))
    pre_x, pre_y = _source_scale(source, params.source_size, exact)  # exact: full resolution, or raises
    if exact:
        square = to_rgb(_as_image(source)).crop((left, top, left + side, top + side))
        return np.asarray(square.resize((TARGET_SIZE, TARGET_SIZE), Image.Resampling.BILINEAR)), 1
    rgb = _decode_rgb(source, _reduction_for(side * min(pre_x, pre_y), exact))
    scale_x, scale_y = rgb.shape[1] / width, rgb.shape[0] / height
    square = rgb[round(top * scale_y):round((top + side) * scale_y),
                 round(left * scale_x):round((left + side) * scale_x)]
    return _resize_uint8(square), round(1 / min(scale_x, scale_y))


def _resize_uint8(rgb: np.ndarray) -> np.ndarray:
    """Antialiased bilinear resize of uint8 RGB to 224x224 in torch's fixed-point kernel (rounded, as PIL)."""
    import torch
    own = rgb.flags.writeable and min(rgb.strides) > 0  # torch takes neither read-only nor reversed views
    pixels = torch.from_numpy(rgb if own else rgb.copy()).permute(2, 0, 1)[None]
    resized = torch.nn.functional.interpolate(pixels, size=(TARGET_SIZE, TARGET_SIZE), mode="bilinear",
                                              align_corners=False, antialias=True)
    return cv2.merge(list(resized[0].numpy()))


def render_challenge(image, params: ChallengeParams, *, rng=None,
                     exact: bool = False) -> tuple[np.ndarray, int]:
    """Render drawn parameters: the 224x224 uint8 RGB array the validator would JPEG-encode.

    ``image`` is a PIL image, a path or encoded bytes, either the full-resolution source
    (``params.source_size``) or a reduced copy of it (see ``store_size``). A lazily opened JPEG is decoded
    at a reduced scale when the crop allows and ``exact`` is False; that mutates the PIL object passed in.
    ``rng`` drives GNC's noise. Returns the array and the overall reduction used (1 = full resolution).
    """
    source = _open_source(image)
    if params.level == FALLBACK_LEVEL:
        return _pixels(source), 1
    if params.level == 0:
        return _centre_square(source, params, exact)
    pre_x, pre_y = _source_scale(source, params.source_size, exact)
    reduction = _reduction_for(params.crop_box[2] * min(pre_x, pre_y), exact)
    rgb = _decode_rgb(source, reduction)
    scale_x, scale_y = rgb.shape[1] / params.source_size[0], rgb.shape[0] / params.source_size[1]
    if exact:
        array = _resize_like_validator(_rotated_window(rgb, scale_x, scale_y, params))
    else:
        array = _resize_fast_from_columns(_rotated_window(rgb, scale_x, scale_y, params, transposed=True))
    rng = _generator(rng)
    for kind, _ in LEVEL_DISTORTIONS[params.level]:
        array = apply_distortion(array, kind, params.distortions[kind], rng)
    return array, round(1 / min(scale_x, scale_y))


def validator_cache(image_bytes: bytes) -> bytes:
    """The bytes a validator holds for a real image after its cache step (natix/validator/cache/extract.py):
    the image as PIL opens it, re-saved in its own format at PIL's defaults. A JPEG becomes a new JPEG at
    quality 75 with 4:2:0 chroma, at full size, without EXIF or ICC profile; a PNG stays lossless (its pixels
    do not change, so its bytes are returned as they are). No RGB conversion, no EXIF transpose."""
    with Image.open(io.BytesIO(image_bytes)) as image:
        if image.format == "PNG":
            return bytes(image_bytes)
        image.load()
        buffer = io.BytesIO()
        image.save(buffer, format=image.format)  # MPO, WEBP, ... as well: validators never sample those
        return buffer.getvalue()


def encode_fallback_jpeg(image) -> bytes:
    """Level -1: the cached image sent as it is, full size, as a JPEG at PIL's defaults. A mode JPEG cannot
    hold (RGBA, P, 16-bit) makes the validator's own save fail, so it never sends such a challenge; here it
    is converted (``data.images.to_rgb``) so that evaluation still has an image to score."""
    source = _as_image(_open_source(image))
    if source.mode not in ("RGB", "L", "CMYK"):
        source = to_rgb(source)
    buffer = io.BytesIO()
    source.save(buffer, format="JPEG")
    return buffer.getvalue()


def encode_challenge_jpeg(rgb: np.ndarray) -> bytes:
    """The validator's encoding: PIL JPEG with default settings (quality 75, 4:2:0)."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG")
    return buffer.getvalue()


def simulate_challenge(image, *, level: int | None = None, rng=None, mask_center=None,
                       level_probs: Mapping[int, float] | None = None, exact: bool = False,
                       source_size: tuple[int, int] | None = None,
                       fallback: bool = False) -> tuple[Image.Image, dict]:
    """A validator's challenge built from ``image`` (the validator's cached bytes: ``validator_cache``), as
    the miner receives it.

    Returns ``PIL.Image.open`` of the JPEG bytes (left as opened: ``format == "JPEG"``, its quantization
    tables intact, not converted): 224x224 at levels 0-3; at level -1 (``level=-1``, or a drawn level 1-3 of a
    row with ``fallback``) the unaugmented image at full size. ``info`` holds ``level``, ``distortions``
    (kind -> level, 0 = not applied), ``angle`` and ``crop_box`` (None at levels -1 and 0),
    ``drawn_crop_box``, ``source_size``, ``decode_reduction`` and ``jpeg_bytes``. ``level=None`` draws the
    level from ``level_probs`` (default 0.25 each); ``rng`` (seed or numpy Generator) makes it reproducible;
    ``exact=True`` decodes at full resolution like the validator (slower, see the module docstring).
    ``image`` may be a reduced copy from ``store_copy``: then ``source_size`` is the original's (width,
    height), on which the parameters are drawn (``mask_center`` stays in original pixels).
    """
    source, params, array, reduction = _draw_and_render(image, level, rng, mask_center, level_probs, exact,
                                                        source_size, fallback)
    jpeg = encode_fallback_jpeg(source) if array is None else encode_challenge_jpeg(array)
    info = {"level": params.level, "distortions": dict(params.distortions), "angle": params.angle,
            "crop_box": params.crop_box, "drawn_crop_box": params.drawn_crop_box,
            "source_size": params.source_size, "decode_reduction": reduction, "jpeg_bytes": jpeg}
    return Image.open(io.BytesIO(jpeg)), info


def challenge_pixels(image, *, level: int | None = None, rng=None, mask_center=None,
                     level_probs: Mapping[int, float] | None = None, exact: bool = False,
                     source_size: tuple[int, int] | None = None, fallback: bool = False,
                     level0_jpeg=None) -> np.ndarray:
    """The RGB pixels (HxWx3 uint8) a miner decodes from ``simulate_challenge``'s JPEG, with the same
    arguments and the same draws, without its PIL objects: the training views' path. The 224 px JPEG
    round trip runs in ``miner_decoded``; a level -1 challenge is decoded by PIL and converted to RGB, as
    the miner's image processor does.

    ``level0_jpeg`` (a path or bytes): the image's level-0 challenge as the validator sends it
    (``level0_challenge_jpeg``; the reduced stores keep it). Level 0 draws nothing but the level, so when it
    is drawn that JPEG is decoded instead of rendering the image again: the validator's exact pixels (what
    ``exact=True`` renders), at a fraction of the cost. The draws, and every other level, are unchanged.
    """
    rng = _generator(rng)
    source, params = _draw(image, level, rng, mask_center, level_probs, source_size, fallback)
    if params.level == 0 and level0_jpeg is not None:
        named = isinstance(level0_jpeg, str | os.PathLike)
        pixels = _jpeg_decoded(Path(level0_jpeg).read_bytes() if named else bytes(level0_jpeg))
        if pixels is None or pixels.shape != (TARGET_SIZE, TARGET_SIZE, 3):
            name = level0_jpeg if named else "level0_jpeg"
            raise ValueError(f"{name}: not a {TARGET_SIZE}x{TARGET_SIZE} level-0 challenge JPEG "
                             f"(`streetvision verify --deep` checks the store)")
        return pixels
    source = _open_source(image) if source is None else source
    if params.level == FALLBACK_LEVEL:
        return _pil_decoded(encode_fallback_jpeg(source))
    array, _ = render_challenge(source, params, rng=rng, exact=exact)
    return miner_decoded(array)


def _draw(image, level, rng, mask_center, level_probs, source_size, fallback):
    """(the opened source, or None when ``source_size`` is given: a store copy opens only when it renders;
    the drawn parameters)."""
    source = None if source_size else _open_source(image)
    width, height = source_size or _size(source)
    params = draw_challenge_params(width, height, level=level, rng=rng, mask_center=mask_center,
                                   level_probs=level_probs, fallback=fallback)
    return source, params


def _draw_and_render(image, level, rng, mask_center, level_probs, exact, source_size, fallback):
    """(source, params, the 224x224 array the validator encodes or None at level -1, decode reduction)."""
    rng = _generator(rng)
    source, params = _draw(image, level, rng, mask_center, level_probs, source_size, fallback)
    source = _open_source(image) if source is None else source
    if params.level == FALLBACK_LEVEL:
        return source, params, None, 1
    array, reduction = render_challenge(source, params, rng=rng, exact=exact)
    return source, params, array, reduction


def level0_challenge_jpeg(image) -> bytes:
    """The validator's level-0 challenge of ``image`` (the full-resolution bytes it caches) as it sends it:
    the centre square resized by PIL, as a JPEG at PIL's defaults (``exact=True``). Level 0 draws nothing
    else, so these bytes are every level-0 challenge of the image; the reduced training stores keep them
    (``LEVEL0_SUFFIX``) for ``challenge_pixels(level0_jpeg=...)``. PIL only: the data step needs no torch."""
    _, info = simulate_challenge(image, level=0, rng=0, exact=True)
    return info["jpeg_bytes"]


# --- the miner's decode of a challenge, fast ---

JPEG_QUALITY = 75  # PIL's default, which the validators' ``Image.save(format="JPEG")`` uses


def miner_decoded(rgb: np.ndarray) -> np.ndarray:
    """The pixels a miner decodes from the validator's JPEG of ``rgb`` (``encode_challenge_jpeg``, then
    PIL's decode), as HxWx3 uint8 RGB.

    OpenCV's libjpeg-turbo makes the round trip about twice as fast as PIL's; it runs only when it gives
    PIL's pixels exactly (the same quantisation tables at quality 75, 4:2:0, integer DCT and fancy
    upsampling), which ``opencv_jpeg_matches_pil`` checks once per process; otherwise PIL does it (and
    decodes stored level-0 challenges too).
    """
    if not opencv_jpeg_matches_pil():
        return _pil_round_trip(rgb)
    return _opencv_round_trip(rgb)


def _pil_round_trip(rgb: np.ndarray) -> np.ndarray:
    return _pil_decoded(encode_challenge_jpeg(rgb))


def _jpeg_decoded(jpeg: bytes) -> np.ndarray | None:
    """The miner's decode of a challenge JPEG (``_pil_decoded``), in OpenCV's codec where it gives PIL's
    pixels exactly; None when it is not an image."""
    if not opencv_jpeg_matches_pil():
        try:
            return _pil_decoded(jpeg)
        except (OSError, ValueError):
            return None
    return _opencv_decoded(np.frombuffer(jpeg, dtype=np.uint8))


def _pil_decoded(jpeg: bytes) -> np.ndarray:
    """The miner's decode: PIL opens the JPEG, its image processor converts it to RGB (a writable array)."""
    with Image.open(io.BytesIO(jpeg)) as sent:
        return np.array(sent.convert("RGB"))


_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10 decodes straight to RGB
# quality 75 and 4:2:0 chroma (libjpeg's default; named where the OpenCV build has the option)
_OPENCV_JPEG_SETTINGS = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] + (
    [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]
    if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR_420") else [])


def _opencv_round_trip(rgb: np.ndarray) -> np.ndarray:
    _, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), _OPENCV_JPEG_SETTINGS)
    return _opencv_decoded(encoded)


def _opencv_decoded(encoded: np.ndarray) -> np.ndarray | None:
    """RGB pixels, or None when ``encoded`` is not an image."""
    if _IMREAD_RGB is not None:
        return cv2.imdecode(encoded, _IMREAD_RGB)
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    return None if decoded is None else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


@functools.cache
def opencv_jpeg_matches_pil() -> bool:
    """Whether OpenCV's JPEG round trip, and its decode of PIL's JPEG (a stored level-0 challenge), give
    PIL's pixels on probe images (photo-like gradients with edges and noise, flat colours, saturated
    chroma); the libraries' bundled libjpeg builds decide it. Either failing sends both to PIL."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, TARGET_SIZE, dtype=np.float32)
    smooth = np.stack([ramp[None, :].repeat(TARGET_SIZE, 0), ramp[:, None].repeat(TARGET_SIZE, 1),
                       255 - ramp[None, :].repeat(TARGET_SIZE, 0)], axis=2)
    noisy = np.clip(smooth + rng.normal(0, 25, smooth.shape), 0, 255).astype(np.uint8)
    edges = np.zeros((TARGET_SIZE, TARGET_SIZE, 3), np.uint8)
    edges[40:180, 30:120] = (255, 0, 0)
    edges[100:200, 90:210] = (0, 200, 255)
    probes = [smooth.astype(np.uint8), noisy, edges, rng.integers(0, 256, edges.shape, dtype=np.uint8)]
    try:
        # both the round trip and OpenCV's decode of PIL's JPEG (a stored level-0 challenge)
        return all(np.array_equal(_opencv_round_trip(probe), _pil_round_trip(probe))
                   and np.array_equal(_opencv_decoded(np.frombuffer(encode_challenge_jpeg(probe), np.uint8)),
                                      _pil_round_trip(probe)) for probe in probes)
    except cv2.error:
        return False


# --- an optional pre-resized image store ---

def store_size(width: int, height: int) -> tuple[int, int]:
    """The smallest size at which every crop a validator can draw keeps ``MIN_DECODED_CROP`` (336) pixels
    across: the same rule as the reduced-scale decode, so a training view from the store loses no more
    detail than one decoded at a reduced scale from the original.

    The smallest crop side is ``round(sqrt(0.2 * width * height))`` (or the shorter side when no random
    square fits); level 0 uses the shorter side, which is never smaller. Images already that small keep
    their size.
    """
    smallest_side = min(round(math.sqrt(CROP_SCALE[0] * width * height)), width, height)
    scale = min(1.0, MIN_DECODED_CROP / smallest_side)
    return math.ceil(width * scale), math.ceil(height * scale)


STORE_JPEG_QUALITY = 95  # the reduced training store's encoding (benchmarks/challenge.py: its cost)
LEVEL0_SUFFIX = ".level0.jpg"  # the reduced stores' copy of an image's level-0 challenge
RAW_SUFFIX = ".npy"  # decoded pixels: numpy's own format (shape and dtype in its header, never pickles)
# data.store -> the suffix of its training copies
STORE_SUFFIXES = {"reduced": ".train.jpg", "reduced_raw": ".train" + RAW_SUFFIX}


def store_copy_bytes(image, store: str = "reduced") -> tuple[bytes, tuple[int, int]] | None:
    """The training-store copy of ``image`` (``store`` is ``data.store``: "reduced" as JPEG bytes, quality
    95, 4:4:4; "reduced_raw" as its uint8 RGB pixels in ``.npy`` format), or None when the image is
    already no larger than ``store_size``: then training reads the image itself."""
    if store not in STORE_SUFFIXES:
        raise ValueError(f"store must be one of {', '.join(STORE_SUFFIXES)}; got {store!r}")
    copy, original = store_copy(image)
    if copy.size == original:
        return None
    buffer = io.BytesIO()
    if store == "reduced_raw":
        np.save(buffer, np.asarray(copy), allow_pickle=False)
    else:
        copy.save(buffer, format="JPEG", quality=STORE_JPEG_QUALITY, subsampling=0)
    return buffer.getvalue(), copy.size


# path -> (data offset, shape) of each raw copy this process has read: a training worker reads every copy
# each epoch, and parsing the .npy header (a Python literal) costs as much as reading the pixels.
_RAW_LAYOUTS: dict[str, tuple[int, tuple[int, ...]]] = {}


def load_raw(path) -> np.ndarray:
    """A ``reduced_raw`` store copy (a path, or an open binary file): the uint8 RGB pixels, checked (a file
    that is not one names itself).

    Read again, a copy at a path skips its header when the file still has the size it had (store files are
    written once, under their content hash); otherwise it is read and checked from scratch."""
    if not isinstance(path, str | os.PathLike):
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise ValueError(f"{path}: not a raw image store file ({error})") from None
        return _checked_pixels(array, str(path))
    key = str(path)
    if key in _RAW_LAYOUTS:
        offset, shape = _RAW_LAYOUTS[key]
        with contextlib.suppress(OSError):
            if os.path.getsize(key) == offset + math.prod(shape):
                return np.fromfile(key, dtype=np.uint8, offset=offset).reshape(shape)
        del _RAW_LAYOUTS[key]
    try:
        mapped = np.load(key, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"{path}: not a raw image store file ({error})") from None
    array = _checked_pixels(np.array(mapped), key)  # a copy in memory: the map closes with ``mapped``
    if isinstance(mapped, np.memmap) and mapped.flags.c_contiguous:
        _RAW_LAYOUTS[key] = (mapped.offset, mapped.shape)
    return array


def store_copy(image) -> tuple[Image.Image, tuple[int, int]]:
    """A reduced RGB copy for a challenge store, and the original (width, height) to keep beside it.

    Render from it with ``simulate_challenge(copy, source_size=original_size, ...)``: the parameters are
    still drawn on the original size. Encode the copy at a high quality (e.g. JPEG 95): what it loses
    adds to the reduced-scale trade described in the module docstring.
    """
    source = _as_image(_open_source(image))
    original = source.size
    target = store_size(*original)
    if target == original:
        return to_rgb(source), original
    if source.format == "JPEG":
        source.draft("RGB", target)  # at most halves the work; INTER_AREA does the exact size
    rgb = cv2.resize(np.asarray(to_rgb(source)), target, interpolation=cv2.INTER_AREA)
    return Image.fromarray(rgb), original


# --- training ---

class ChallengeTransform:
    """A picklable per-image training transform: source image -> the JPEG a miner would receive (PIL).

    In a DataLoader worker the generator is derived from the worker's torch seed (new every epoch, and
    reproducible under ``torch.manual_seed`` / Lightning's ``seed_everything``) and ``seed``; outside
    workers from ``seed`` alone (fresh entropy when None). Workers and epochs thus never repeat each
    other's challenges. Follow it with the model's evaluation preprocessing (resize/crop/normalise):
    exactly what a served model sees.
    """

    def __init__(self, level_probs: Mapping[int, float] | None = None, seed: int | None = None,
                 exact: bool = False):
        self.level_probs = _check_level_probs(level_probs if level_probs is not None else LEVEL_PROBS)
        self.seed, self.exact = seed, exact
        self._rng: np.random.Generator | None = None
        self._worker: tuple[int, int] | None = None  # (id, torch seed) of the worker the generator is for

    def _generator(self) -> np.random.Generator:
        import torch
        info = torch.utils.data.get_worker_info()
        key = None if info is None else (info.id, info.seed)
        if self._rng is None or key != self._worker:
            entropy = [] if info is None else [info.seed]
            entropy += [] if self.seed is None else [self.seed]
            self._rng, self._worker = np.random.default_rng(np.random.SeedSequence(entropy or None)), key
        return self._rng

    def __call__(self, image, mask_center=None, source_size=None, fallback: bool = False) -> Image.Image:
        challenge, _ = simulate_challenge(image, rng=self._generator(), mask_center=mask_center,
                                          exact=self.exact, level_probs=self.level_probs,
                                          source_size=source_size, fallback=fallback)
        return challenge

    def pixels(self, image, mask_center=None, source_size=None, fallback: bool = False,
               level0_jpeg=None) -> np.ndarray:
        """The same challenge as the miner decodes it, as RGB pixels (``challenge_pixels``; faster)."""
        return challenge_pixels(image, rng=self._generator(), mask_center=mask_center, exact=self.exact,
                                level_probs=self.level_probs, source_size=source_size, fallback=fallback,
                                level0_jpeg=level0_jpeg)
