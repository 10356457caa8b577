"""Opening an image and turning it into 8-bit RGB: one way for ingest, every view, the bundle and predict.

- ``open_image`` opens lazily (header only) and refuses an image of more than ``max_pixels`` pixels before a
  single pixel is decoded: a 100 kB PNG can declare 30000 x 30000 pixels (a "decompression bomb"), whose
  decode would take gigabytes. ``DEFAULT_MAX_PIXELS`` (40 MP) keeps every photo a phone or dashcam takes
  (12 MP 4032 x 3024, 4K frames, 24 MP) and bounds one image's decode to about 120 MB of RGB.
- ``to_rgb`` converts every pixel mode to what the image shows, where PIL's ``convert("RGB")`` does not:
  16-bit grey (PIL mode ``I;16``: ``convert`` clips every value above 255, so a 16-bit PNG becomes almost
  white) is scaled to 8 bits; transparent pixels (RGBA, LA, a palette or colour key with transparency) are
  composited over black, the colour a validator's ``convert("RGB")`` shows where an encoder stored black
  under transparency; CMYK, palette, 1-bit and grey images convert as PIL does. Modes without a defined
  8-bit meaning (32-bit float, 32-bit integers outside 0-65535) raise ``ImageError``: ingest quarantines them.
- ``display_name`` prints a file name that is not valid UTF-8 with its bytes escaped (``\\xff``), so that a
  message naming it can always be written.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from streetvision.errors import StreetvisionError

DEFAULT_MAX_PIXELS = 40_000_000
SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
PLAIN_MODES = {"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}


class ImageError(StreetvisionError, ValueError):
    """An image that cannot be read or shown as 8-bit RGB; the message says why."""


class ImageTooLargeError(ImageError):
    """More pixels than allowed (``data.max_pixels``)."""


def display_name(path: str | os.PathLike) -> str:
    """``path`` as text that can always be printed or written (undecodable bytes escaped)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_text_name(path: str | os.PathLike) -> bool:
    """Whether ``path`` is valid UTF-8 (Python keeps undecodable bytes as lone surrogates)."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@contextlib.contextmanager
def _own_pixel_limit():
    """PIL's bomb check off while a header is read: ``open_image`` applies its own limit, with a reason."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def open_image(source, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """A lazily opened image (PIL, nothing decoded yet) from a path, bytes or a PIL image.

    Raises ``ImageTooLargeError`` when width x height exceeds ``max_pixels`` (None: no limit) and
    ``ImageError`` when the data is not an image PIL can read.
    """
    if isinstance(source, Image.Image):
        image = source
    else:
        if isinstance(source, bytes | bytearray | memoryview):
            source = io.BytesIO(bytes(source))
        elif not isinstance(source, str | Path):
            raise ImageError(f"an image must be a path, bytes or a PIL image; got {type(source).__name__}")
        try:
            with _own_pixel_limit():
                image = Image.open(source)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise ImageError(f"not a readable image ({err})") from None
    pixels = image.width * image.height
    if max_pixels is not None and pixels > max_pixels:
        raise ImageTooLargeError(f"{image.width}x{image.height} = {pixels:,} pixels, more than the limit of "
                                 f"{max_pixels:,} (data.max_pixels)")
    return image


def _sixteen_bit_to_grey(image: Image.Image) -> Image.Image:
    values = np.asarray(image)
    if values.dtype != np.uint16 and (values.min() < 0 or values.max() > 65535):
        raise ImageError(f"32-bit integer pixels outside 0-65535 (mode {image.mode}): no 8-bit meaning")
    scaled = (values.astype(np.uint32) * 255 + 32767) // 65535  # round(v / 257)
    grey = Image.fromarray(scaled.astype(np.uint8), "L")
    if "transparency" in image.info and isinstance(image.info["transparency"], int):
        grey.info["transparency"] = (image.info["transparency"] * 255 + 32767) // 65535
    return grey


def to_rgb(image: Image.Image) -> Image.Image:
    """The 8-bit RGB image ``image`` shows (see the module docstring); ``image`` itself when already RGB."""
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "I":
        image = _sixteen_bit_to_grey(image)
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    if image.mode == "RGB":
        return image
    if image.mode in PLAIN_MODES:
        return image.convert("RGB")
    raise ImageError(f"pixel mode {image.mode} has no 8-bit RGB meaning (e.g. 32-bit float): not supported")


def read_rgb(source, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open, decode fully and convert to 8-bit RGB (``ImageError`` naming the reason when it cannot)."""
    image = open_image(source, max_pixels)
    try:
        image.load()
        return to_rgb(image)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError) as err:  # truncated or corrupt data shows only on decode
        raise ImageError(f"cannot be decoded ({err})") from None
