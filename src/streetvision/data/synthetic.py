"""Synthetic street scenes for the embedded demo: seeded, JPEG, recognisable at 64 px.

Two styles share one scene grammar and the labels (docs/synthetic_domains.md): "dashcam" (``data.scenes``:
flat fills, daylight, blur and sensor noise; bit-identical to the generator before styles existed) and
"generated" (``data.scenes_generated``: an SDXL-like look: graded lighting, painterly gradients, shaded
objects, other camera positions, clean pixels). The two domains let the pipeline score real-like and
generated-like images separately. This module is the public face: render, encode, write a data set, draw
a sample grid.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from streetvision.data.scenes import render_dashcam
from streetvision.data.scenes_generated import GENERATED_STREAM, render_generated
from streetvision.io.atomic import atomic_write_bytes

STYLES = ("dashcam", "generated")


def check_style(style: str) -> str:
    if style not in STYLES:
        raise ValueError(f"unknown synthetic style {style!r}: expected one of {', '.join(STYLES)}")
    return style


def render_scene(seed: int, label: int, size: int = 96, style: str = "dashcam") -> Image.Image:
    """Draw one scene; the same (seed, label, size, style) always gives the same image.

    ``style`` is "dashcam" (a noisy daylight camera) or "generated" (a text-to-image look).
    """
    if check_style(style) == "generated":
        return render_generated(seed, label, size)
    return render_dashcam(seed, label, size)


def scene_jpeg(seed: int, label: int, size: int, style: str = "dashcam") -> bytes:
    """The scene as a JPEG: camera-like quality 75-95 for dashcam, near-lossless 92-98 for generated
    (text-to-image output is a lossless PNG at the source)."""
    buffer = io.BytesIO()
    if check_style(style) == "dashcam":
        quality = int(np.random.default_rng(seed + 1).integers(75, 96))
    else:
        quality = int(np.random.default_rng([seed, GENERATED_STREAM, 1]).integers(92, 99))
    render_scene(seed, label, size, style).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def generate_dataset(out_dir: str | Path, count: int, size: int = 96, positive_fraction: float = 0.5,
                     unlabeled_count: int = 0, seed: int = 0, class_names: dict[int, str] | None = None,
                     style: str = "dashcam") -> Path:
    """Write ``count`` labelled scenes as ``<out>/labelled/<class>/<n>.jpg``, unlabeled ones as
    ``<out>/unlabeled/<n>.jpg``.

    Files are written atomically and skipped when already present, so a killed run resumes. The layout
    is the same for every ``style``; give each style its own ``out_dir``.
    """
    check_style(style)
    out = Path(out_dir)
    names = class_names or {1: "roadwork", 0: "none"}
    label_rng = np.random.default_rng([seed, 1])
    labels = (label_rng.random(count) < positive_fraction).astype(int)
    jobs = [(out / "labelled" / names[int(lab)] / f"{i:07d}.jpg", int(lab),
             i) for i, lab in enumerate(labels)]
    unlabeled_labels = (label_rng.random(unlabeled_count) < positive_fraction).astype(int)
    jobs += [(out / "unlabeled" / f"{i:07d}.jpg", int(lab),
              count + i) for i, lab in enumerate(unlabeled_labels)]
    for path, label, index in jobs:
        if not path.exists():
            atomic_write_bytes(path, scene_jpeg(seed * 1_000_003 + index, label, size, style), durable=False)
    return out


def sample_grid(path: str | Path, columns: int = 8, size: int = 96, zoom: int = 2, seed: int = 0) -> Path:
    """A PNG of example scenes, one row per (style, class): dashcam none, roadwork; generated none, roadwork.

    Scenes are rendered at ``size`` and enlarged ``zoom`` times (nearest neighbour, so pixels stay visible).
    """
    rows = [(style, label) for style in STYLES for label in (0, 1)]
    margin, cell = 110, size * zoom
    grid = Image.new("RGB", (margin + columns * cell, len(rows) * cell), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for r, (style, label) in enumerate(rows):
        draw.text((6, r * cell + cell // 2 - 12), f"{style}\n{'roadwork' if label else 'none'}",
                  fill=(0, 0, 0))
        for c in range(columns):
            jpeg = scene_jpeg(seed * 1_000_003 + r * columns + c, label, size, style)
            scene = Image.open(io.BytesIO(jpeg)).convert("RGB").resize((cell, cell), Image.Resampling.NEAREST)
            grid.paste(scene, (margin + c * cell, r * cell))
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    return atomic_write_bytes(Path(path), buffer.getvalue())
