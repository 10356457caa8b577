"""Synthetic street scenes for the embedded demo: seeded, JPEG, recognisable at 64 px.

Every scene has a perspective road with lanes, sky, ground, buildings, trees and cars. Positives add
roadwork (cones, barrels, striped barriers, diamond work signs) at depth-scaled sizes, usually lined up
as a lane closure; negatives often carry hard distractors: orange things that are not roadwork (orange
cars, awnings, round signs, bins, people in orange) and yellow warning diamonds.
Scenes are drawn at twice the output size and downsampled, so edges look like a camera's.

Two styles share that scene grammar and the labels (docs/synthetic_domains.md): "dashcam" (flat fills,
daylight, blur and sensor noise; bit-identical to the generator before styles existed) and "generated"
(an SDXL-like look: graded lighting, painterly gradients, shaded objects, other camera positions, clean
pixels). The two domains let the pipeline score real-like and generated-like images separately.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from streetvision.io.atomic import atomic_write_bytes

SUPERSAMPLE = 2
STYLES = ("dashcam", "generated")
ORANGE = [(255, 110, 0), (240, 90, 10), (255, 130, 20)]
# painter(draw, x, y, scale, rng) draws one object standing at (x, y) at a depth-given scale.
Painter = Callable[[ImageDraw.ImageDraw, float, float, float, np.random.Generator], None]
CAR_COLOURS = [(180, 20, 20), (30, 60, 160), (230, 230, 230), (25, 25, 25), (150, 150, 160), (40, 110, 60)]


@dataclass(frozen=True)
class Scene:
    """Geometry of one road in perspective, in pixel units of the drawing canvas."""

    size: int
    horizon: float
    vanish_x: float
    bottom_left: float
    bottom_right: float

    def depth_y(self, t: float) -> float:
        """t = 0 at the horizon, 1 at the bottom edge."""
        return self.horizon + t * (self.size - self.horizon)

    def road_edges(self, t: float) -> tuple[float, float]:
        return (self.vanish_x + t * (self.bottom_left - self.vanish_x), self.vanish_x + t * (self.bottom_right - self.vanish_x))


def _jitter(rng: np.random.Generator, colour, amount: int = 18) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, c + rng.integers(-amount, amount + 1)))) for c in colour)


def _draw_background(draw: ImageDraw.ImageDraw, scene: Scene, rng: np.random.Generator) -> None:
    s = scene.size
    overcast = rng.random() < 0.3
    top = np.array((150, 150, 155) if overcast else (70, 130, 210), dtype=float)
    bottom = np.array((200, 200, 205) if overcast else (180, 210, 240), dtype=float)
    for y in range(int(scene.horizon) + 1):
        mix = y / max(scene.horizon, 1)
        draw.line([(0, y), (s, y)], fill=tuple(int(v) for v in top * (1 - mix) + bottom * mix))
    ground = _jitter(rng, [(90, 130, 60), (120, 115, 100), (150, 150, 145)][rng.integers(3)], 20)
    draw.rectangle([0, scene.horizon, s, s], fill=ground)


def _draw_buildings(draw, scene: Scene, rng, distractor_awning: bool) -> None:
    s = scene.size
    for side in (0, 1):
        x = 0.0 if side == 0 else s
        for _ in range(rng.integers(1, 4)):
            width = s * rng.uniform(0.12, 0.25)
            height = s * rng.uniform(0.15, 0.4)
            left = x if side == 0 else x - width
            colour = _jitter(rng, [(170, 150, 130), (120, 110, 110), (200, 190, 170), (140, 90, 70)][rng.integers(4)])
            box = [left, scene.horizon - height, left + width, scene.horizon + s * 0.02]
            if side == 0 and box[2] > scene.vanish_x - s * 0.05 or side == 1 and box[0] < scene.vanish_x + s * 0.05:
                break
            draw.rectangle(box, fill=colour)
            win = max(2, int(s * 0.025))
            for wy in np.arange(box[1] + win, box[3] - 2 * win, 2.2 * win):
                for wx in np.arange(box[0] + win, box[2] - win, 2.2 * win):
                    draw.rectangle([wx, wy, wx + win, wy + win], fill=_jitter(rng, (60, 70, 90), 15))
            if distractor_awning and rng.random() < 0.5:
                draw.rectangle([box[0], scene.horizon - height * 0.3, box[2], scene.horizon - height * 0.22],
                               fill=ORANGE[rng.integers(3)])
                distractor_awning = False
            x = box[2] if side == 0 else box[0]


def _draw_road(draw, scene: Scene, rng) -> None:
    s = scene.size
    asphalt = _jitter(rng, (85, 85, 90), 15)
    draw.polygon([(scene.vanish_x - 1, scene.horizon), (scene.vanish_x + 1, scene.horizon),
                  (scene.bottom_right, s), (scene.bottom_left, s)], fill=asphalt)
    edge_colour = (235, 235, 235)
    for t0, t1 in ((0.02, 1.0),):
        for which in (0, 1):
            a = scene.road_edges(t0)[which] * 0.97 + scene.vanish_x * 0.03
            b = scene.road_edges(t1)[which] * 0.97 + scene.vanish_x * 0.03
            draw.line([(a, scene.depth_y(t0)), (b, scene.depth_y(t1))], fill=edge_colour, width=max(1, s // 80))
    centre_colour = (240, 200, 40) if rng.random() < 0.4 else (240, 240, 240)
    t = 0.05
    while t < 1.0:
        t_end = min(1.0, t * 1.35 + 0.02)
        xa = sum(scene.road_edges(t)) / 2
        xb = sum(scene.road_edges(t_end)) / 2
        draw.line([(xa, scene.depth_y(t)), (xb, scene.depth_y(t_end))], fill=centre_colour,
                  width=max(1, int(s * 0.012 * (t + t_end))))
        t = t_end * 1.25 + 0.03


def _draw_tree(draw, x: float, y: float, scale: float, rng) -> None:
    trunk_h, crown = 0.5 * scale, 0.35 * scale
    draw.rectangle([x - scale * 0.04, y - trunk_h, x + scale * 0.04, y], fill=_jitter(rng, (90, 60, 30)))
    draw.ellipse([x - crown, y - trunk_h - crown * 1.6, x + crown, y - trunk_h + crown * 0.4],
                 fill=_jitter(rng, (40, 110, 40), 25))


def _draw_car(draw, x: float, y: float, scale: float, colour) -> None:
    w, h = scale * 0.9, scale * 0.45
    draw.rectangle([x - w / 2, y - h, x + w / 2, y - h * 0.2], fill=colour)
    draw.rectangle([x - w * 0.35, y - h * 1.45, x + w * 0.35, y - h * 0.95], fill=colour)
    draw.rectangle([x - w * 0.3, y - h * 1.38, x + w * 0.3, y - h], fill=(60, 80, 100))
    for wx in (x - w * 0.3, x + w * 0.3):
        draw.ellipse([wx - h * 0.25, y - h * 0.45, wx + h * 0.25, y + h * 0.05], fill=(20, 20, 20))


def _draw_cone(draw, x, y, scale, rng) -> None:
    h, w = scale * 0.5, scale * 0.3
    orange = ORANGE[rng.integers(3)]
    draw.rectangle([x - w * 0.65, y - h * 0.08, x + w * 0.65, y], fill=(40, 40, 40))
    draw.polygon([(x - w / 2, y - h * 0.08), (x + w / 2, y - h * 0.08), (x, y - h)], fill=orange)
    for frac in (0.45, 0.7):
        band_y = y - h * frac
        half = w / 2 * (1 - frac) + 0.5
        draw.rectangle([x - half, band_y - h * 0.06, x + half, band_y + h * 0.06], fill=(245, 245, 245))


def _draw_barrel(draw, x, y, scale, rng) -> None:
    h, w = scale * 0.5, scale * 0.32
    draw.rounded_rectangle([x - w / 2, y - h, x + w / 2, y], radius=w * 0.2, fill=ORANGE[rng.integers(3)])
    for frac in (0.25, 0.55, 0.8):
        draw.rectangle([x - w / 2, y - h * frac - h * 0.06, x + w / 2, y - h * frac + h * 0.06], fill=(245, 245, 245))


def _draw_barrier(draw, x, y, scale, rng) -> None:
    w, h = scale * 0.9, scale * 0.16
    top = y - scale * 0.42
    stripe = (220, 20, 20) if rng.random() < 0.3 else ORANGE[rng.integers(3)]
    for leg in (x - w * 0.4, x + w * 0.4):
        draw.line([(leg, top), (leg, y)], fill=(60, 60, 60), width=max(1, int(scale * 0.04)))
    draw.rectangle([x - w / 2, top, x + w / 2, top + h], fill=(245, 245, 245))
    n = 5
    for i in range(n):
        x0 = x - w / 2 + i * w / n
        draw.polygon([(x0, top + h), (x0 + w / (2 * n), top), (x0 + w / n, top), (x0 + w / (2 * n), top + h)],
                     fill=stripe)


def _draw_diamond_sign(draw, x, y, scale, fill, glyph: str) -> None:
    pole_top = y - scale * 0.55
    draw.line([(x, pole_top), (x, y)], fill=(90, 90, 90), width=max(1, int(scale * 0.04)))
    r = scale * 0.22
    cy = pole_top - r * 0.6
    diamond = [(x, cy - r), (x + r, cy), (x, cy + r), (x - r, cy)]
    draw.polygon(diamond, fill=(20, 20, 20))
    inner = r * 0.8
    draw.polygon([(x, cy - inner), (x + inner, cy), (x, cy + inner), (x - inner, cy)], fill=fill)
    if glyph == "worker":  # a digging figure
        draw.ellipse([x - r * 0.15, cy - r * 0.45, x + r * 0.05, cy - r * 0.25], fill=(20, 20, 20))
        draw.line([(x - r * 0.05, cy - r * 0.25), (x + r * 0.1, cy + r * 0.3)], fill=(20, 20, 20), width=max(1, int(r * 0.12)))
        draw.line([(x + r * 0.2, cy - r * 0.1), (x - r * 0.3, cy + r * 0.35)], fill=(20, 20, 20), width=max(1, int(r * 0.08)))
    else:  # a plain exclamation mark
        draw.line([(x, cy - r * 0.4), (x, cy + r * 0.15)], fill=(20, 20, 20), width=max(1, int(r * 0.15)))
        draw.ellipse([x - r * 0.08, cy + r * 0.28, x + r * 0.08, cy + r * 0.44], fill=(20, 20, 20))


def _draw_round_sign(draw, x, y, scale, rng) -> None:
    pole_top = y - scale * 0.55
    draw.line([(x, pole_top), (x, y)], fill=(90, 90, 90), width=max(1, int(scale * 0.04)))
    r = scale * 0.18
    draw.ellipse([x - r, pole_top - 2 * r, x + r, pole_top], fill=ORANGE[rng.integers(3)])


def _draw_person(draw, x, y, scale, rng) -> None:
    h = scale * 0.6
    draw.rectangle([x - h * 0.12, y - h * 0.45, x + h * 0.12, y], fill=(40, 40, 70))
    draw.rectangle([x - h * 0.16, y - h * 0.85, x + h * 0.16, y - h * 0.45], fill=ORANGE[rng.integers(3)])
    draw.ellipse([x - h * 0.1, y - h, x + h * 0.1, y - h * 0.82], fill=(200, 160, 130))


def _draw_bin(draw, x, y, scale, rng) -> None:
    h, w = scale * 0.35, scale * 0.25
    draw.rectangle([x - w / 2, y - h, x + w / 2, y], fill=ORANGE[rng.integers(3)])


def _place(scene: Scene, rng, t: float, lateral: float) -> tuple[float, float]:
    """Point at depth t; lateral 0 = left edge, 1 = right edge, outside [0, 1] = off the road."""
    left, right = scene.road_edges(t)
    return left + lateral * (right - left), scene.depth_y(t)


def _object_scale(scene: Scene, t: float) -> float:
    return scene.size * (0.04 + 0.5 * t)


def _draw_roadwork(draw, scene: Scene, rng, painters: dict[str, Painter]) -> None:
    """A lane closure: a diagonal line of cones/barrels, sometimes a barrier and a work sign."""
    t_start = rng.uniform(0.25, 0.7)
    n = int(rng.integers(2, 6))
    side = rng.random() < 0.5
    kind = rng.choice(["cone", "barrel", "mixed"], p=[0.5, 0.25, 0.25])
    objects = []
    for i in range(n):
        t = min(0.95, t_start + i * rng.uniform(0.05, 0.09))
        lateral = (0.15 + 0.25 * i / max(n - 1, 1)) if side else (0.85 - 0.25 * i / max(n - 1, 1))
        item = kind if kind != "mixed" else rng.choice(["cone", "barrel"])
        objects.append((t, lateral, item))
    if rng.random() < 0.45:
        objects.append((rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.7), "barrier"))
    if rng.random() < 0.5:
        objects.append((rng.uniform(0.3, 0.7), -0.12 if side else 1.12, "work_sign"))
    _paint_in_depth_order(draw, scene, rng, objects, painters)


def _draw_street_furniture(draw, scene: Scene, rng, distractors: bool, painters: dict[str, Painter]) -> None:
    items = []
    for _ in range(rng.integers(1, 4)):
        items.append((rng.uniform(0.1, 0.9), rng.choice([-0.25, 1.25]) + rng.uniform(-0.1, 0.1), "tree"))
    for _ in range(rng.integers(0, 3)):
        items.append((rng.uniform(0.15, 0.85), rng.uniform(0.2, 0.8), "car"))
    if distractors:
        for _ in range(rng.integers(1, 3)):
            what = rng.choice(["orange_car", "round_sign", "person", "bin", "warning_sign"], p=[0.3, 0.2, 0.2, 0.2, 0.1])
            on_road = what == "orange_car"
            lateral = rng.uniform(0.2, 0.8) if on_road else rng.choice([-0.12, 1.12])
            items.append((rng.uniform(0.25, 0.85), lateral, what))
    _paint_in_depth_order(draw, scene, rng, items, painters)


def _paint_in_depth_order(draw, scene: Scene, rng, items: list[tuple[float, float, str]],
                          painters: dict[str, Painter]) -> None:
    """Far objects first so near ones occlude them; each item is (depth t, lateral, kind)."""
    for t, lateral, item in sorted(items):
        x, y = _place(scene, rng, t, lateral)
        painters[item](draw, x, y, _object_scale(scene, t), rng)


# The dashcam style's flat painters, one per object kind: painter(draw, x, y, scale, rng).
DASHCAM_PAINTERS: dict[str, Painter] = {
    "cone": _draw_cone,
    "barrel": _draw_barrel,
    "barrier": _draw_barrier,
    "work_sign": lambda draw, x, y, scale, rng: _draw_diamond_sign(draw, x, y, scale, ORANGE[rng.integers(3)], "worker"),
    "tree": lambda draw, x, y, scale, rng: _draw_tree(draw, x, y, scale * 1.6, rng),
    "car": lambda draw, x, y, scale, rng: _draw_car(draw, x, y, scale, CAR_COLOURS[rng.integers(len(CAR_COLOURS))]),
    "orange_car": lambda draw, x, y, scale, rng: _draw_car(draw, x, y, scale, ORANGE[rng.integers(3)]),
    "round_sign": _draw_round_sign,
    "person": _draw_person,
    "bin": _draw_bin,
    "warning_sign": lambda draw, x, y, scale, rng: _draw_diamond_sign(draw, x, y, scale, (250, 215, 30), "exclamation"),
}


# --- The "generated" style: how SDXL-made street scenes differ from dashcam photos ---------------------------
# Same scene grammar and labels, different image formation: a graded lighting preset instead of daylight,
# painterly gradients (sky, clouds, haze, light falloff, bloom) instead of flat fills plus sensor noise,
# shaded and shadowed objects of varied size, a centred or swinging road seen from a higher or lower
# camera, sometimes rolled, and clean area-averaged pixels where the dashcam has blur and sensor noise.

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
    "golden_hour": Lighting((105, 115, 185), (255, 180, 105), (255, 196, 140), (1.08, 0.97, 0.82), 1.3, 1.05, 0.0,
                            (255, 150, 60), 0.35, 0.06, 0.3),
    "vivid_midday": Lighting((10, 70, 210), (115, 195, 255), (190, 222, 255), (1.0, 1.0, 1.0), 1.45, 1.15, -6.0,
                             (255, 250, 215), 0.2, 0.4, 0.2),
    "high_key": Lighting((200, 220, 242), (246, 246, 240), (244, 244, 242), (1.03, 1.02, 1.0), 1.1, 0.85, 25.0,
                         (255, 255, 255), 0.2, 0.3, 0.0),
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
        _jitter(rng, preset.sky_top, 12), _jitter(rng, preset.sky_horizon, 12), _jitter(rng, preset.haze, 10),
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
    ground_colour = np.float32(_jitter(rng, GROUND_COLOURS[rng.integers(len(GROUND_COLOURS))], 15))
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
            s_top, s_bottom = (top_y - apex_y) / (base_top - apex_y), (bottom_y - apex_y) / (base_top - apex_y)
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
            draw.rectangle([x0, y - h * (frac + 0.06), x1, y - h * (frac - 0.06)], fill=_shade((245, 245, 240), shade))
    draw.ellipse([x - w / 2, y - h - w * 0.12, x + w / 2, y - h + w * 0.12], fill=_shade(orange, 1.15))


def _paint_tree(draw, x, y, scale, rng, light: Light) -> None:
    """A rounded crown of overlapping blobs, darker underneath and lighter on the sun side."""
    scale *= 1.6 * rng.uniform(0.8, 1.3)
    trunk_h, crown = 0.5 * scale, 0.3 * scale
    draw.rectangle([x - scale * 0.035, y - trunk_h, x + scale * 0.035, y], fill=_jitter(rng, (80, 55, 35)))
    green = np.array(_jitter(rng, (45, 125, 50), 25), dtype=float)
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
    draw.rounded_rectangle([x - w / 2, y - h, x + w / 2, y - h * 0.2], radius=h * 0.2, fill=_shade(colour, 1.1))
    draw.rectangle([x - w / 2, y - h * 0.55, x + w / 2, y - h * 0.2], fill=_shade(colour, 0.75))
    draw.rounded_rectangle([x - w * 0.35, y - h * 1.45, x + w * 0.35, y - h * 0.95], radius=h * 0.15, fill=colour)
    draw.rectangle([x - w * 0.3, y - h * 1.38, x + w * 0.3, y - h], fill=(70, 95, 125))
    draw.polygon([(x - w * 0.25, y - h), (x - w * 0.1, y - h * 1.38), (x, y - h * 1.38), (x - w * 0.15, y - h)],
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
    pixels = pixels * ((1 + 0.3 * towards_sun) * vignette) + np.float32(preset.glow) * (preset.glow_strength * glow)
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


def _render_generated(seed: int, label: int, size: int) -> Image.Image:
    rng = np.random.default_rng([seed, GENERATED_STREAM])
    canvas = size * SUPERSAMPLE
    scene = _generated_geometry(rng, canvas)
    light = _pick_light(rng)
    image = _paint_backdrop(scene, light, rng)
    draw = ImageDraw.Draw(image, "RGBA")  # RGBA drawing blends translucent fills (shadows, gloss)
    distractors = label == 0 and rng.random() < 0.7
    _draw_buildings(draw, scene, rng, distractor_awning=distractors)
    _draw_road(draw, scene, rng)
    painters = _generated_painters(light)
    _draw_street_furniture(draw, scene, rng, distractors, painters)
    if label == 1:
        _draw_roadwork(draw, scene, rng, painters)
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
    return image.transform(image.size, Image.Transform.AFFINE, coefficients, resample=Image.Resampling.BILINEAR)


def check_style(style: str) -> str:
    if style not in STYLES:
        raise ValueError(f"unknown synthetic style {style!r}: expected one of {', '.join(STYLES)}")
    return style


def render_scene(seed: int, label: int, size: int = 96, style: str = "dashcam") -> Image.Image:
    """Draw one scene; the same (seed, label, size, style) always gives the same image.

    ``style`` is "dashcam" (a noisy daylight camera) or "generated" (a text-to-image look).
    """
    if check_style(style) == "generated":
        return _render_generated(seed, label, size)
    rng = np.random.default_rng(seed)
    canvas = size * SUPERSAMPLE
    centre = canvas * rng.uniform(0.4, 0.6)
    half_width = canvas * rng.uniform(0.4, 0.75)
    scene = Scene(canvas, canvas * rng.uniform(0.35, 0.5), canvas * rng.uniform(0.4, 0.6),
                  centre - half_width, centre + half_width)
    image = Image.new("RGB", (canvas, canvas))
    draw = ImageDraw.Draw(image)
    distractors = label == 0 and rng.random() < 0.7
    _draw_background(draw, scene, rng)
    _draw_buildings(draw, scene, rng, distractor_awning=distractors)
    _draw_road(draw, scene, rng)
    _draw_street_furniture(draw, scene, rng, distractors, DASHCAM_PAINTERS)
    if label == 1:
        _draw_roadwork(draw, scene, rng, DASHCAM_PAINTERS)
    image = image.resize((size, size), Image.Resampling.LANCZOS)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.2, 0.7)))
    pixels = np.asarray(image, dtype=np.float32) * rng.uniform(0.7, 1.15)
    pixels += rng.normal(0, rng.uniform(1, 6), pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


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
    """Write ``count`` labelled scenes as ``<out>/labelled/<class>/<n>.jpg``, unlabeled ones as ``<out>/unlabeled/<n>.jpg``.

    Files are written atomically and skipped when already present, so a killed run resumes. The layout
    is the same for every ``style``; give each style its own ``out_dir``.
    """
    check_style(style)
    out = Path(out_dir)
    names = class_names or {1: "roadwork", 0: "none"}
    label_rng = np.random.default_rng([seed, 1])
    labels = (label_rng.random(count) < positive_fraction).astype(int)
    jobs = [(out / "labelled" / names[int(lab)] / f"{i:07d}.jpg", int(lab), i) for i, lab in enumerate(labels)]
    unlabeled_labels = (label_rng.random(unlabeled_count) < positive_fraction).astype(int)
    jobs += [(out / "unlabeled" / f"{i:07d}.jpg", int(lab), count + i) for i, lab in enumerate(unlabeled_labels)]
    for path, label, index in jobs:
        if not path.exists():
            atomic_write_bytes(path, scene_jpeg(seed * 1_000_003 + index, label, size, style), durable=False)
    return out


def sample_grid(path: str | Path, columns: int = 8, size: int = 96, zoom: int = 2, seed: int = 0) -> Path:
    """A PNG of example scenes, one row per (style, class): dashcam none / roadwork, generated none / roadwork.

    Scenes are rendered at ``size`` and enlarged ``zoom`` times (nearest neighbour, so pixels stay visible).
    """
    rows = [(style, label) for style in STYLES for label in (0, 1)]
    margin, cell = 110, size * zoom
    grid = Image.new("RGB", (margin + columns * cell, len(rows) * cell), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for r, (style, label) in enumerate(rows):
        draw.text((6, r * cell + cell // 2 - 12), f"{style}\n{'roadwork' if label else 'none'}", fill=(0, 0, 0))
        for c in range(columns):
            jpeg = scene_jpeg(seed * 1_000_003 + r * columns + c, label, size, style)
            scene = Image.open(io.BytesIO(jpeg)).convert("RGB").resize((cell, cell), Image.Resampling.NEAREST)
            grid.paste(scene, (margin + c * cell, r * cell))
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    return atomic_write_bytes(Path(path), buffer.getvalue())
