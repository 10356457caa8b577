"""The synthetic scene generator: both styles, determinism, and the dashcam style pinned bit for bit."""

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from streetvision.data.synthetic import STYLES, generate_dataset, render_scene, sample_grid, scene_jpeg

# sha256 of render_scene(...) pixels and of scene_jpeg(...) bytes for the dashcam style, recorded before
# the generated style existed: existing caches and results depend on them. They assume this environment's
# numpy and Pillow (a Pillow upgrade may change JPEG bytes or drawing; re-pin only after checking that).
DASHCAM_PINS = {
    (0, 0, 96): ("4c31aa620b4dc72c7093d6a6496896db6c54526c2e7ff3176feb447fd9742751",
                 "f6f3e8fec24287a4b824c3e6cbbcb302526ec0d89cb181e1d21ccbcbfee86a1a"),
    (1, 1, 96): ("8519920415fa07d81881f54efc020b1be3f30a8bc334cbaaae491b41b5ba7bdb",
                 "487f202ce3badd46ecd82db9091ede2907bc96b5aad096aa60335f467a9b0df2"),
    (7, 1, 64): ("750487e23d47e75c35975fcbb7398f0baab9568a86d7102aca0ac9200d4d72e4",
                 "fa224656e041ff1888bd029797f6b1fe5301fb722fdfbbba1faa57f3fd278778"),
    (12345, 0, 48): ("a3648e3bfc2f39963252c41ca4bc51e9c85b22dd3d14a8eee79a3b189e6c3f38",
                     "d38afb9dd745a2a893531b4a12ca5e350856af5924c2656baa9f8ddaaf885c3c"),
}
# generate_dataset(count=12, size=64, unlabeled_count=3, seed=5): relative paths and bytes, in path order.
DASHCAM_DATASET_PIN = "567ff5229ec30034a19a22ad513ed69b5e242f814f3fbf0f3c8746477eca9716"


def decode(jpeg: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(jpeg))
    image.load()
    return image


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


@pytest.mark.parametrize(("seed", "label", "size"), sorted(DASHCAM_PINS))
def test_dashcam_style_is_unchanged(seed, label, size):
    raw_pin, jpeg_pin = DASHCAM_PINS[seed, label, size]
    assert hashlib.sha256(np.asarray(render_scene(seed, label, size)).tobytes()).hexdigest() == raw_pin
    assert hashlib.sha256(scene_jpeg(seed, label, size)).hexdigest() == jpeg_pin
    assert scene_jpeg(seed, label, size, style="dashcam") == scene_jpeg(seed, label, size)


def test_dashcam_dataset_is_unchanged(tmp_path):
    root = generate_dataset(tmp_path, count=12, size=64, unlabeled_count=3, seed=5)
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.jpg")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    assert digest.hexdigest() == DASHCAM_DATASET_PIN


@pytest.mark.parametrize("style", STYLES)
def test_each_style_is_deterministic_per_seed_label_and_size(style):
    first = scene_jpeg(3, 1, 64, style)
    assert scene_jpeg(3, 1, 64, style) == first
    assert np.array_equal(np.asarray(render_scene(3, 1, 64, style)), np.asarray(render_scene(3, 1, 64, style)))
    for other in (scene_jpeg(4, 1, 64, style), scene_jpeg(3, 0, 64, style), scene_jpeg(3, 1, 48, style)):
        assert other != first


def test_the_styles_render_different_images_for_the_same_seed():
    assert not np.array_equal(np.asarray(render_scene(3, 1, 64, "dashcam")),
                              np.asarray(render_scene(3, 1, 64, "generated")))


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("size", [32, 50, 96])
def test_each_style_writes_an_rgb_jpeg_of_the_requested_size(style, size):
    for label in (0, 1):
        image = decode(scene_jpeg(11, label, size, style))
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (size, size))


def test_generated_dataset_keeps_the_layout(tmp_path):
    root = generate_dataset(tmp_path / "generated", count=10, size=48, unlabeled_count=2, seed=1,
                            style="generated")
    labelled = sorted(p.relative_to(root).parts[:2] for p in (root / "labelled").rglob("*.jpg"))
    assert len(labelled) == 10 and {part for _, part in labelled} <= {"roadwork", "none"}
    assert len(list((root / "unlabeled").glob("*.jpg"))) == 2
    dashcam = generate_dataset(tmp_path / "dashcam", count=10, size=48, unlabeled_count=2, seed=1)
    # Same file names and classes (labels are drawn from the seed alone), different pictures.
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*.jpg"))
    assert names == sorted(str(p.relative_to(dashcam)) for p in dashcam.rglob("*.jpg"))
    assert all((root / n).read_bytes() != (dashcam / n).read_bytes() for n in names)


def _style_statistics(style: str, count: int = 30, size: int = 64) -> tuple[float, float]:
    """Mean HSV saturation and mean of per-image median |Laplacian| (high-frequency energy)."""
    saturation, high_frequency = [], []
    for i in range(count):
        image = decode(scene_jpeg(i, i % 2, size, style)).convert("RGB")
        saturation.append(pixels(image.convert("HSV"))[..., 1].mean())
        grey = pixels(image).mean(axis=2)
        laplacian = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
        high_frequency.append(np.median(np.abs(laplacian)))
    return float(np.mean(saturation)), float(np.mean(high_frequency))


def test_generated_style_is_more_saturated_and_smoother_than_dashcam():
    dashcam_saturation, dashcam_hf = _style_statistics("dashcam")
    generated_saturation, generated_hf = _style_statistics("generated")
    assert generated_saturation > 1.15 * dashcam_saturation  # graded, saturated palettes
    assert dashcam_hf > 1.5 * generated_hf  # sensor noise vs clean gradients


def _striped_orange_fraction(image: Image.Image) -> float:
    """Share of vivid orange pixels with a white pixel 1-2 rows above or below: the banding of cones,
    barrels and barriers. The orange distractors (cars, bins, vests, awnings, round signs) have no bands."""
    hsv = pixels(image.convert("HSV"))
    hue, saturation, value = hsv[..., 0] * 360 / 255, hsv[..., 1], hsv[..., 2]
    orange = (hue > 5) & (hue < 35) & (saturation > 150) & (value > 120)
    white = (saturation < 90) & (value > 170)
    near_white = np.zeros_like(white)
    for rows in (1, 2):
        near_white[:-rows] |= white[rows:]
        near_white[rows:] |= white[:-rows]
    return float(np.mean(orange & near_white))


@pytest.mark.parametrize("style", STYLES)
def test_roadwork_label_means_striped_orange_objects_in_each_style(style):
    def mean_fraction(label):
        return np.mean([_striped_orange_fraction(render_scene(i, label, 64, style)) for i in range(30)])
    assert mean_fraction(1) > 5 * mean_fraction(0)


@pytest.mark.parametrize("call", [
    lambda: render_scene(0, 1, 64, style="sdxl"),
    lambda: scene_jpeg(0, 1, 64, style="sdxl"),
    lambda: generate_dataset("unused", count=10, style="sdxl"),
])
def test_unknown_style_is_rejected_by_name(call, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError,
                       match=r"unknown synthetic style 'sdxl': expected one of dashcam, generated"):
        call()
    assert not (tmp_path / "unused").exists()


def test_sample_grid_has_one_row_per_style_and_class(tmp_path):
    path = sample_grid(tmp_path / "grid.png", columns=3, size=32, zoom=2)
    grid = Image.open(path)
    assert grid.format == "PNG"
    assert grid.height == 2 * len(STYLES) * 64 and grid.width > 3 * 64
