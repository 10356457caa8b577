"""The demo's scene grammar, and its dashcam style (``data.synthetic`` is the public face).

Every scene has a perspective road with lanes, sky, ground, buildings, trees and cars. Positives add
roadwork (cones, barrels, striped barriers, diamond work signs) at depth-scaled sizes, usually lined up
as a lane closure; negatives often carry hard distractors: orange things that are not roadwork (orange
cars, awnings, round signs, bins, people in orange) and yellow warning diamonds. Scenes are drawn at twice
the output size and downsampled, so edges look like a camera's. The dashcam style paints flat fills in
daylight, then adds blur and sensor noise; ``data.scenes_generated`` paints the same grammar SDXL-like.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SUPERSAMPLE = 2


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
        return (self.vanish_x + t * (self.bottom_left - self.vanish_x),
                self.vanish_x + t * (self.bottom_right - self.vanish_x))


def jitter(rng: np.random.Generator, colour, amount: int = 18) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, c + rng.integers(-amount, amount + 1)))) for c in colour)


def draw_background(draw: ImageDraw.ImageDraw, scene: Scene, rng: np.random.Generator) -> None:
    s = scene.size
    overcast = rng.random() < 0.3
    top = np.array((150, 150, 155) if overcast else (70, 130, 210), dtype=float)
    bottom = np.array((200, 200, 205) if overcast else (180, 210, 240), dtype=float)
    for y in range(int(scene.horizon) + 1):
        mix = y / max(scene.horizon, 1)
        draw.line([(0, y), (s, y)], fill=tuple(int(v) for v in top * (1 - mix) + bottom * mix))
    ground = jitter(rng, [(90, 130, 60), (120, 115, 100), (150, 150, 145)][rng.integers(3)], 20)
    draw.rectangle([0, scene.horizon, s, s], fill=ground)


def draw_buildings(draw, scene: Scene, rng, distractor_awning: bool) -> None:
    s = scene.size
    for side in (0, 1):
        x = 0.0 if side == 0 else s
        for _ in range(rng.integers(1, 4)):
            width = s * rng.uniform(0.12, 0.25)
            height = s * rng.uniform(0.15, 0.4)
            left = x if side == 0 else x - width
            facades = [(170, 150, 130), (120, 110, 110), (200, 190, 170), (140, 90, 70)]
            colour = jitter(rng, facades[rng.integers(4)])
            box = [left, scene.horizon - height, left + width, scene.horizon + s * 0.02]
            if (side == 0 and box[2] > scene.vanish_x - s * 0.05
                    or side == 1 and box[0] < scene.vanish_x + s * 0.05):
                break
            draw.rectangle(box, fill=colour)
            win = max(2, int(s * 0.025))
            for wy in np.arange(box[1] + win, box[3] - 2 * win, 2.2 * win):
                for wx in np.arange(box[0] + win, box[2] - win, 2.2 * win):
                    draw.rectangle([wx, wy, wx + win, wy + win], fill=jitter(rng, (60, 70, 90), 15))
            if distractor_awning and rng.random() < 0.5:
                draw.rectangle([box[0], scene.horizon - height * 0.3, box[2], scene.horizon - height * 0.22],
                               fill=ORANGE[rng.integers(3)])
                distractor_awning = False
            x = box[2] if side == 0 else box[0]


def draw_road(draw, scene: Scene, rng) -> None:
    s = scene.size
    asphalt = jitter(rng, (85, 85, 90), 15)
    draw.polygon([(scene.vanish_x - 1, scene.horizon), (scene.vanish_x + 1, scene.horizon),
                  (scene.bottom_right, s), (scene.bottom_left, s)], fill=asphalt)
    edge_colour = (235, 235, 235)
    for t0, t1 in ((0.02, 1.0),):
        for which in (0, 1):
            a = scene.road_edges(t0)[which] * 0.97 + scene.vanish_x * 0.03
            b = scene.road_edges(t1)[which] * 0.97 + scene.vanish_x * 0.03
            draw.line([(a, scene.depth_y(t0)), (b, scene.depth_y(t1))], fill=edge_colour,
                      width=max(1, s // 80))
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
    draw.rectangle([x - scale * 0.04, y - trunk_h, x + scale * 0.04, y], fill=jitter(rng, (90, 60, 30)))
    draw.ellipse([x - crown, y - trunk_h - crown * 1.6, x + crown, y - trunk_h + crown * 0.4],
                 fill=jitter(rng, (40, 110, 40), 25))


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
        draw.rectangle([x - w / 2, y - h * frac - h * 0.06, x + w / 2, y - h * frac + h * 0.06],
                       fill=(245, 245, 245))


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
        draw.line([(x - r * 0.05, cy - r * 0.25), (x + r * 0.1, cy + r * 0.3)], fill=(20, 20, 20),
                  width=max(1, int(r * 0.12)))
        draw.line([(x + r * 0.2, cy - r * 0.1), (x - r * 0.3, cy + r * 0.35)], fill=(20, 20, 20),
                  width=max(1, int(r * 0.08)))
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


def draw_roadwork(draw, scene: Scene, rng, painters: dict[str, Painter]) -> None:
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


def draw_street_furniture(draw, scene: Scene, rng, distractors: bool, painters: dict[str, Painter]) -> None:
    items = []
    for _ in range(rng.integers(1, 4)):
        items.append((rng.uniform(0.1, 0.9), rng.choice([-0.25, 1.25]) + rng.uniform(-0.1, 0.1), "tree"))
    for _ in range(rng.integers(0, 3)):
        items.append((rng.uniform(0.15, 0.85), rng.uniform(0.2, 0.8), "car"))
    if distractors:
        for _ in range(rng.integers(1, 3)):
            what = rng.choice(["orange_car", "round_sign", "person", "bin", "warning_sign"],
                              p=[0.3, 0.2, 0.2, 0.2, 0.1])
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
    "work_sign": lambda draw, x, y, scale, rng: _draw_diamond_sign(draw, x, y, scale, ORANGE[rng.integers(3)],
                                                                   "worker"),
    "tree": lambda draw, x, y, scale, rng: _draw_tree(draw, x, y, scale * 1.6, rng),
    "car": lambda draw, x, y, scale, rng: _draw_car(draw, x, y, scale,
                                                    CAR_COLOURS[rng.integers(len(CAR_COLOURS))]),
    "orange_car": lambda draw, x, y, scale, rng: _draw_car(draw, x, y, scale, ORANGE[rng.integers(3)]),
    "round_sign": _draw_round_sign,
    "person": _draw_person,
    "bin": _draw_bin,
    "warning_sign": lambda draw, x, y, scale, rng: _draw_diamond_sign(draw, x, y, scale, (250, 215, 30),
                                                                      "exclamation"),
}


def render_dashcam(seed: int, label: int, size: int) -> Image.Image:
    """One scene in the dashcam style: flat fills, daylight, Lanczos downsampling, some blur, sensor noise."""
    rng = np.random.default_rng(seed)
    canvas = size * SUPERSAMPLE
    centre = canvas * rng.uniform(0.4, 0.6)
    half_width = canvas * rng.uniform(0.4, 0.75)
    scene = Scene(canvas, canvas * rng.uniform(0.35, 0.5), canvas * rng.uniform(0.4, 0.6),
                  centre - half_width, centre + half_width)
    image = Image.new("RGB", (canvas, canvas))
    draw = ImageDraw.Draw(image)
    distractors = label == 0 and rng.random() < 0.7
    draw_background(draw, scene, rng)
    draw_buildings(draw, scene, rng, distractor_awning=distractors)
    draw_road(draw, scene, rng)
    draw_street_furniture(draw, scene, rng, distractors, DASHCAM_PAINTERS)
    if label == 1:
        draw_roadwork(draw, scene, rng, DASHCAM_PAINTERS)
    image = image.resize((size, size), Image.Resampling.LANCZOS)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.2, 0.7)))
    pixels = np.asarray(image, dtype=np.float32) * rng.uniform(0.7, 1.15)
    pixels += rng.normal(0, rng.uniform(1, 6), pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
