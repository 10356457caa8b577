"""The demo's "generated" style: how SDXL-made street scenes differ from dashcam photos.

Same scene grammar and labels as the dashcam style (``data.scenes``), different image formation: a graded
lighting preset instead of daylight, painterly gradients (sky, clouds, haze, light falloff, bloom) instead
of flat fills plus sensor noise, shaded and shadowed objects of varied size, a centred or swinging road
seen from a higher or lower camera, sometimes rolled, and clean area-averaged pixels where the dashcam has
blur and sensor noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from streetvision.data.scenes import (
    CAR_COLOURS,
    DASHCAM_PAINTERS,
    SUPERSAMPLE,
    Painter,
    Scene,
    draw_buildings,
    draw_road,
    draw_roadwork,
    draw_street_furniture,
    jitter,
)

GENERATED_STREAM = 2  # the generated style draws from rng([seed, 2]): independent of the dashcam's rng(seed)


GENERATED_ORANGE = [(255, 96, 0), (255, 122, 24), (246, 78, 16)]


GROUND_COLOURS = [(70, 150, 55), (185, 165, 90), (200, 182, 160), (120, 160, 80)]


@dataclass(frozen=True)
class Lighting:
    """One colour grade of the generated style (colours RGB 0-255; sun position as fractions of the frame)."""

    sky_top: tuple[int, int, int]
    sky_horizon: tuple[int, int, int]
    haze: tuple[int, int, int]
    tint: tuple[float, float, float]
    saturation: float
    contrast: float
    lift: float
    glow: tuple[int, int, int]
    glow_strength: float
    sun_height: float  # above the horizon, as a fraction of the frame
    vignette: float


LIGHTING_PRESETS = {
    "golden_hour": Lighting((105, 115, 185), (255, 180, 105), (255, 196, 140), (1.08, 0.97, 0.82), 1.3, 1.05,
                            0.0, (255, 150, 60), 0.35, 0.06, 0.3),
    "vivid_midday": Lighting((10, 70, 210), (115, 195, 255), (190, 222, 255), (1.0, 1.0, 1.0), 1.45, 1.15,
                             -6.0, (255, 250, 215), 0.2, 0.4, 0.2),
    "high_key": Lighting((200, 220, 242), (246, 246, 240), (244, 244, 242), (1.03, 1.02, 1.0), 1.1, 0.85,
                         25.0, (255, 255, 255), 0.2, 0.3, 0.0),
    "twilight": Lighting((40, 32, 108), (250, 125, 120), (232, 148, 160), (0.93, 0.86, 1.08), 1.3, 1.1, 0.0,
                         (255, 130, 140), 0.3, 0.04, 0.35),
}


@dataclass(frozen=True)
class Light:
    """The lighting of one generated scene: a jittered preset and the side the sun is on."""

    preset: Lighting
    from_left: bool

    def cylinder_shades(self, strips: int) -> list[float]:
        """Brightness of vertical strips across a lit cylinder (cones, barrels): Lambert plus ambient."""
        light_x = -0.6 if self.from_left else 0.6
        centres = (np.arange(strips) + 0.5) / strips * 2 - 1
        diffuse = np.maximum(0.0, centres * light_x + np.sqrt(1 - centres**2) * 0.8)
        return list(0.5 + 0.7 * diffuse)


def _shade(colour, factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, c * factor))) for c in colour)


def _pick_light(rng) -> Light:
    preset = LIGHTING_PRESETS[list(LIGHTING_PRESETS)[rng.integers(len(LIGHTING_PRESETS))]]
    jittered = Lighting(
        jitter(rng, preset.sky_top, 12), jitter(rng, preset.sky_horizon, 12), jitter(rng, preset.haze, 10),
        preset.tint, preset.saturation * rng.uniform(0.9, 1.1), preset.contrast, preset.lift,
        preset.glow, preset.glow_strength * rng.uniform(0.7, 1.2), preset.sun_height, preset.vignette,
    )
    return Light(jittered, from_left=bool(rng.random() < 0.5))


def _generated_geometry(rng, canvas: int) -> Scene:
    """A higher or lower camera than the dashcam's; the road centred (symmetric) or swinging to a side."""
    horizon = canvas * (rng.uniform(0.2, 0.32) if rng.random() < 0.5 else rng.uniform(0.52, 0.62))
    if rng.random() < 0.5:
        vanish_x = centre = canvas * rng.uniform(0.48, 0.52)
    else:
        vanish_x, centre = canvas * rng.uniform(0.2, 0.8), canvas * rng.uniform(0.35, 0.65)
    half_width = canvas * rng.uniform(0.5, 0.85)
    return Scene(canvas, horizon, vanish_x, centre - half_width, centre + half_width)


def _paint_backdrop(scene: Scene, light: Light, rng) -> Image.Image:
    """Sky with a smooth gradient and soft clouds, ground fading into the haze at the horizon.

    Everything here is smooth, so it is computed at a quarter of the canvas's pixels and enlarged.
    """
    s, preset = scene.size // SUPERSAMPLE, light.preset
    horizon = scene.horizon / SUPERSAMPLE
    rows = np.arange(s, dtype=np.float32)[:, None, None]
    sky_mix = np.clip(rows / max(horizon, 1.0), 0, 1) ** 1.5
    sky = np.float32(preset.sky_top) * (1 - sky_mix) + np.float32(preset.sky_horizon) * sky_mix
    coarse = Image.fromarray(rng.random((3, 5)).astype(np.float32))  # mode F: float pixels
    cloud_field = np.asarray(coarse.resize((s, s), Image.Resampling.BICUBIC))[..., None]
    cover = np.clip((cloud_field - rng.uniform(0.5, 0.8)) * 3, 0, 1) * 0.7
    sky = sky * (1 - cover) + (np.float32(preset.haze) + 255) / 2 * cover
    ground_mix = np.clip((rows - horizon) / (s - horizon), 0, 1) ** 0.6
    ground_colour = np.float32(jitter(rng, GROUND_COLOURS[rng.integers(len(GROUND_COLOURS))], 15))
    ground = np.float32(preset.haze) * (1 - ground_mix) + ground_colour * ground_mix
    backdrop = np.where(rows < horizon, sky, ground)
    image = Image.fromarray(np.clip(backdrop, 0, 255).astype(np.uint8))
    return image.resize((scene.size, scene.size), Image.Resampling.BILINEAR)


def _paint_shadow(draw, x, y, width, light: Light) -> None:
    """A soft contact shadow cast away from the sun."""
    away = width * (0.35 if light.from_left else -0.35)
    draw.ellipse([x - width * 0.55 + away, y - width * 0.14, x + width * 0.55 + 2 * away, y + width * 0.1],
                 fill=(20, 10, 30, 110))


def _paint_cone(draw, x, y, scale, rng, light: Light) -> None:
    """A cone as a fan of shaded slices from the apex, with shaded reflective bands."""
    scale *= rng.uniform(1.0, 1.5)
    h, w = scale * 0.55, scale * 0.34
    _paint_shadow(draw, x, y, w * 1.4, light)
    orange = GENERATED_ORANGE[rng.integers(3)]
    base_top, apex_y = y - h * 0.08, y - h
    draw.rounded_rectangle([x - w * 0.68, base_top, x + w * 0.68, y], radius=h * 0.03, fill=(38, 34, 40))
    shades = light.cylinder_shades(5)
    edges = np.linspace(x - w / 2, x + w / 2, len(shades) + 1)
    for shade, x0, x1 in zip(shades, edges[:-1], edges[1:], strict=True):
        draw.polygon([(x, apex_y), (x0, base_top), (x1, base_top)], fill=_shade(orange, shade))
        for frac in (0.4, 0.66):  # band as the part of this slice between two heights
            top_y, bottom_y = y - h * (frac + 0.07), y - h * (frac - 0.07)
            height = base_top - apex_y
            s_top, s_bottom = (top_y - apex_y) / height, (bottom_y - apex_y) / height
            draw.polygon([(x + s_top * (x0 - x), top_y), (x + s_top * (x1 - x), top_y),
                          (x + s_bottom * (x1 - x), bottom_y), (x + s_bottom * (x0 - x), bottom_y)],
                         fill=_shade((245, 245, 240), shade))


def _paint_barrel(draw, x, y, scale, rng, light: Light) -> None:
    """A drum as shaded vertical strips with a lit lid and shaded white bands."""
    scale *= rng.uniform(1.0, 1.45)
    h, w = scale * 0.5, scale * 0.34
    _paint_shadow(draw, x, y, w * 1.5, light)
    orange = GENERATED_ORANGE[rng.integers(3)]
    shades = light.cylinder_shades(5)
    edges = np.linspace(x - w / 2, x + w / 2, len(shades) + 1)
    for shade, x0, x1 in zip(shades, edges[:-1], edges[1:], strict=True):
        draw.rectangle([x0, y - h, x1, y], fill=_shade(orange, shade))
        for frac in (0.25, 0.55, 0.8):
            draw.rectangle([x0, y - h * (frac + 0.06), x1, y - h * (frac - 0.06)],
                           fill=_shade((245, 245, 240), shade))
    draw.ellipse([x - w / 2, y - h - w * 0.12, x + w / 2, y - h + w * 0.12], fill=_shade(orange, 1.15))


def _paint_tree(draw, x, y, scale, rng, light: Light) -> None:
    """A rounded crown of overlapping blobs, darker underneath and lighter on the sun side."""
    scale *= 1.6 * rng.uniform(0.8, 1.3)
    trunk_h, crown = 0.5 * scale, 0.3 * scale
    draw.rectangle([x - scale * 0.035, y - trunk_h, x + scale * 0.035, y], fill=jitter(rng, (80, 55, 35)))
    green = np.array(jitter(rng, (45, 125, 50), 25), dtype=float)
    sun = -1 if light.from_left else 1
    for dx, dy, r, shade in ((0, 0, 1.0, 0.7), (-0.35 * sun, -0.2, 0.7, 0.95), (0.3 * sun, -0.45, 0.55, 1.2)):
        cx, cy, rad = x + dx * crown, y - trunk_h - crown * 0.6 + dy * crown, crown * r
        draw.ellipse([cx - rad, cy - rad, cx + rad, cy + rad], fill=_shade(green, shade))


def _paint_car(draw, x, y, scale, rng, light: Light, colour=None) -> None:
    """A rounded, two-tone shaded car with a glossy windscreen."""
    colour = colour if colour is not None else CAR_COLOURS[rng.integers(len(CAR_COLOURS))]
    scale *= rng.uniform(0.9, 1.2)
    w, h = scale * 0.9, scale * 0.45
    _paint_shadow(draw, x, y, w * 1.1, light)
    draw.rounded_rectangle([x - w / 2, y - h, x + w / 2, y - h * 0.2], radius=h * 0.2,
                           fill=_shade(colour, 1.1))
    draw.rectangle([x - w / 2, y - h * 0.55, x + w / 2, y - h * 0.2], fill=_shade(colour, 0.75))
    draw.rounded_rectangle([x - w * 0.35, y - h * 1.45, x + w * 0.35, y - h * 0.95], radius=h * 0.15,
                           fill=colour)
    draw.rectangle([x - w * 0.3, y - h * 1.38, x + w * 0.3, y - h], fill=(70, 95, 125))
    draw.polygon([(x - w * 0.25, y - h), (x - w * 0.1, y - h * 1.38), (x, y - h * 1.38),
                  (x - w * 0.15, y - h)],
                 fill=(255, 255, 255, 90))
    for wx in (x - w * 0.3, x + w * 0.3):
        draw.ellipse([wx - h * 0.25, y - h * 0.45, wx + h * 0.25, y + h * 0.05], fill=(25, 22, 28))


def _with_shadow(flat: Painter, light: Light) -> Painter:
    """A dashcam painter at a varied size, standing in a soft shadow."""
    def paint(draw, x, y, scale, rng):
        scale *= rng.uniform(0.9, 1.3)
        _paint_shadow(draw, x, y, scale * 0.4, light)
        flat(draw, x, y, scale, rng)
    return paint


def _generated_painters(light: Light) -> dict[str, Painter]:
    painters = {kind: _with_shadow(flat, light) for kind, flat in DASHCAM_PAINTERS.items()}
    painters.update({
        "cone": lambda draw, x, y, scale, rng: _paint_cone(draw, x, y, scale, rng, light),
        "barrel": lambda draw, x, y, scale, rng: _paint_barrel(draw, x, y, scale, rng, light),
        "tree": lambda draw, x, y, scale, rng: _paint_tree(draw, x, y, scale, rng, light),
        "car": lambda draw, x, y, scale, rng: _paint_car(draw, x, y, scale, rng, light),
        "orange_car": lambda draw, x, y, scale, rng: _paint_car(draw, x, y, scale, rng, light,
                                                                GENERATED_ORANGE[rng.integers(3)]),
    })
    return painters


def _light_and_grade(pixels: np.ndarray, horizon: float, light: Light, rng) -> np.ndarray:
    """Haze towards the horizon, light falloff across the frame, sun glow, bloom, vignette, colour grade."""
    size, preset = pixels.shape[0], light.preset
    rows = np.arange(size, dtype=np.float32)[:, None, None] / size
    cols = np.arange(size, dtype=np.float32)[None, :, None] / size
    horizon /= size
    haze = rng.uniform(0.15, 0.35) * np.exp(-np.abs(rows - horizon) / 0.14)
    pixels = pixels * (1 - haze) + np.float32(preset.haze) * haze
    towards_sun = (0.5 - cols) if light.from_left else (cols - 0.5)
    vignette = 1 - preset.vignette * 2 * ((cols - 0.5) ** 2 + (rows - 0.5) ** 2)
    sun_x = rng.uniform(0.05, 0.3) if light.from_left else rng.uniform(0.7, 0.95)
    glow = np.exp(-((cols - sun_x) ** 2 + (rows - horizon + preset.sun_height) ** 2) / (2 * 0.22**2))
    pixels = (pixels * ((1 + 0.3 * towards_sun) * vignette)
              + np.float32(preset.glow) * (preset.glow_strength * glow))
    pixels = pixels + 0.5 * _blurred_highlights(pixels)
    return pixels @ _grade_matrix(preset).T + (128 * (1 - preset.contrast) + preset.lift)


def _blurred_highlights(pixels: np.ndarray) -> np.ndarray:
    """Bloom: what is brighter than 190, blurred by shrinking it 4x and enlarging it again."""
    highlights = Image.fromarray(np.clip(pixels - 190, 0, 255).astype(np.uint8))
    blurred = highlights.reduce(4).resize(highlights.size, Image.Resampling.BILINEAR)
    return np.asarray(blurred, dtype=np.float32)


def _grade_matrix(preset: Lighting) -> np.ndarray:
    """Tint, then saturation about the channel mean, then contrast about mid-grey, as one 3x3 matrix."""
    to_grey = np.full((3, 3), 1 / 3, dtype=np.float32)
    saturate = preset.saturation * np.eye(3, dtype=np.float32) + (1 - preset.saturation) * to_grey
    return preset.contrast * saturate @ np.diag(np.float32(preset.tint))


def render_generated(seed: int, label: int, size: int) -> Image.Image:
    rng = np.random.default_rng([seed, GENERATED_STREAM])
    canvas = size * SUPERSAMPLE
    scene = _generated_geometry(rng, canvas)
    light = _pick_light(rng)
    image = _paint_backdrop(scene, light, rng)
    draw = ImageDraw.Draw(image, "RGBA")  # RGBA drawing blends translucent fills (shadows, gloss)
    distractors = label == 0 and rng.random() < 0.7
    draw_buildings(draw, scene, rng, distractor_awning=distractors)
    draw_road(draw, scene, rng)
    painters = _generated_painters(light)
    draw_street_furniture(draw, scene, rng, distractors, painters)
    if label == 1:
        draw_roadwork(draw, scene, rng, painters)
    # Area averaging: smooth anti-aliased edges, none of the dashcam's Lanczos ringing, blur or noise.
    pixels = np.asarray(image.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    pixels = _light_and_grade(pixels, scene.horizon / SUPERSAMPLE, light, rng)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if rng.random() < 0.4:
        image = _roll(image, rng.uniform(-7, 7))
    return image


def _roll(image: Image.Image, degrees: float, zoom: float = 1.15) -> Image.Image:
    """Rotate about the centre, zoomed just enough (for |angle| <= 7 degrees) that no corner is empty."""
    cos, sin = np.cos(np.radians(degrees)) / zoom, np.sin(np.radians(degrees)) / zoom
    cx, cy = image.width / 2, image.height / 2
    # PIL maps each output pixel (u, v) to the input pixel (a u + b v + c, d u + e v + f).
    coefficients = (cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy)
    return image.transform(image.size, Image.Transform.AFFINE, coefficients,
                           resample=Image.Resampling.BILINEAR)
