"""The challenge simulator against a literal re-implementation of the validator (tests/natix_reference.py)."""

import io
import math
import os

import cv2
import natix_reference as ref
import numpy as np
import pytest
import torch
from helpers import photo_like_jpeg
from PIL import Image, JpegImagePlugin
from scipy import stats
from torchvision import transforms

from streetvision.data import challenge as ch


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """As in a DataLoader worker: on shared cores, torch's thread pool stalls on these small tensors."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


@pytest.fixture(scope="module")
def small_images():
    """Photo-like 224 px, odd-sized and pure-noise uint8 RGB arrays."""
    noise = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    return [decoded(photo_like_jpeg(1, 224, 224)), decoded(photo_like_jpeg(2, 301, 187)), noise]


@pytest.fixture(scope="module")
def sources():
    """JPEG sources: landscape, portrait and 4:3."""
    return {size: photo_like_jpeg(sum(size), *size) for size in [(500, 375), (300, 420), (640, 480)]}


# --- single distortions ---

@pytest.mark.parametrize("kind", ["CS", "CC", "JPEG", "GB"])
@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_deterministic_distortions_match_the_validator(small_images, kind, level):
    for rgb in small_images:
        ours = ch.apply_distortion(rgb, kind, level).astype(int)
        theirs = ref.distort_rgb(rgb, kind, level).astype(int)
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() <= 1
        assert not np.array_equal(ours, rgb)  # the distortion did something


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_colour_noise_has_the_validators_statistics(level):
    flat = np.full((256, 256, 3), (128, 110, 140), np.uint8)
    ours = ch.apply_distortion(flat, "GNC", level, rng=level).astype(float) - flat
    theirs = ref.distort_rgb(flat, "GNC", level,
                             noise_rng=np.random.default_rng(100 + level)).astype(float) - flat
    n = flat.shape[0] * flat.shape[1]
    for channel in range(3):
        a, b = ours[..., channel], theirs[..., channel]
        assert abs(a.mean() - b.mean()) < 6 * math.hypot(a.std(),
                                                         b.std()) / math.sqrt(n) + 0.5  # + truncation
        assert a.std() == pytest.approx(b.std(), rel=0.03)


def test_colour_noise_scale_on_luma_is_297_sqrt_variance():
    """NATIX.md's figure: luma noise std about 297 * sqrt(v) on 0-255 (here without clipping)."""
    flat = np.full((256, 256, 3), 128, np.uint8)
    for level, variance in enumerate(ch.DISTORTION_PARAMETERS["GNC"][:3], start=1):
        noisy = ch.apply_distortion(flat, "GNC", level, rng=0).astype(float)
        luma = noisy @ np.array([0.299, 0.587, 0.114])
        assert luma.std() == pytest.approx(255**2 / 219 * math.sqrt(variance), rel=0.04)


def test_distortion_level_zero_returns_the_input():
    rgb = np.zeros((8, 8, 3), np.uint8)
    assert all(ch.apply_distortion(rgb, kind, 0) is rgb for kind in ch.DISTORTION_KINDS)


@pytest.mark.parametrize("kind, level, rgb, message", [
    ("XX", 1, np.zeros((8, 8, 3), np.uint8), "kind"),
    ("BW", 1, np.zeros((8, 8, 3), np.uint8), "kind"),  # upstream has it, validators never use it
    ("CS", 6, np.zeros((8, 8, 3), np.uint8), "level"),
    ("CS", -1, np.zeros((8, 8, 3), np.uint8), "level"),
    ("CS", 1, np.zeros((8, 8, 3), np.float32), "rgb"),
    ("CS", 1, np.zeros((8, 8), np.uint8), "rgb"),
])
def test_apply_distortion_rejects_bad_input(kind, level, rgb, message):
    with pytest.raises(ValueError, match=message):
        ch.apply_distortion(rgb, kind, level)


# --- geometry ---

def test_level_zero_matches_the_validator_exactly():
    for size in [(500, 375), (301, 187), (187, 301)]:  # odd margins exercise CenterCrop's rounding
        data = photo_like_jpeg(7, *size)
        image, info = ch.simulate_challenge(data, level=0, rng=0, exact=True)
        theirs, _ = ref.reference_jpeg(Image.open(io.BytesIO(data)), 0)
        assert info["jpeg_bytes"] == theirs


def test_rotation_and_crop_match_the_validator(sources):
    """Same parameters, full resolution: only nearest-neighbour rounding ties may differ.

    cv2.warpAffine rounds in fixed point, torch's grid_sample in float: a handful of source pixels are
    picked differently (measured: about 4e-5 of the output values differ, 1e-5 by more than 1).
    """
    total = differing = far = 0
    for size, data in sources.items():
        for seed in range(6):
            params = ch.draw_challenge_params(*size, level=1, rng=seed)
            ours, reduction = ch.render_challenge(data, params, exact=True)
            theirs, used = ref.reference_array(Image.open(io.BytesIO(data)), 1, angle=params.angle,
                                               crop_box=params.drawn_crop_box)
            assert reduction == 1 and used["crop_box"] == params.crop_box
            difference = np.abs(ours.astype(int) - theirs)
            total, differing, far = total + difference.size, differing + (difference > 0).sum(), far + (difference > 1).sum()
    assert differing / total < 1e-3
    assert far / total < 2e-4


def test_distorted_levels_match_the_validator(sources):
    data = sources[(640, 480)]
    for seed in range(6):
        params = ch.draw_challenge_params(640, 480, level=2 + seed % 2, rng=seed)
        params.distortions["GNC"] = 0  # noise draws differ by design; compared statistically above
        ours, _ = ch.render_challenge(data, params, exact=True)
        theirs, _ = ref.reference_array(Image.open(io.BytesIO(data)), params.level, angle=params.angle,
                                        crop_box=params.drawn_crop_box, distortions=params.distortions)
        difference = np.abs(ours.astype(int) - theirs)
        assert (difference > 1).mean() < 1e-3


def test_validators_never_flip():
    """Red grows left to right and green top to bottom; a flip would reverse a slope's sign."""
    height, width = 360, 480
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([40 + 215 * x / width, 40 + 215 * y / height, np.full_like(x, 120.0)],
                     -1).astype(np.uint8)
    source = Image.fromarray(image)
    for seed in range(40):
        out = np.asarray(ch.simulate_challenge(source, level=1, rng=seed)[0].convert("RGB")).astype(float)
        inside = out.min(axis=2) > 20  # leave out the black corners of the rotation
        rows, cols = np.nonzero(inside)
        assert np.polyfit(cols, out[..., 0][inside], 1)[0] > 0
        assert np.polyfit(rows, out[..., 1][inside], 1)[0] > 0


def test_mask_center_move_matches_the_validator():
    rng = np.random.default_rng(0)
    for _ in range(500):
        width, height = (int(v) for v in rng.integers(50, 400, 2))
        top, left, side, _ = ch._draw_crop(width, height, rng)
        point = tuple(int(v) for v in rng.integers(-60, 460, 2))  # inside and outside the image
        ours = ch.move_crop_to_point((top, left, side, side), point, width, height)
        assert ours == ref.keep_point((top, left, side, side), point, torch.empty(3, height, width))


def test_mask_center_quirks_by_hand():
    # Landscape 400x200, crop 100 px at the top left.
    # x = 350 is right of the crop: the left edge may go at most to height - side = 100, so 350 stays out.
    assert ch.move_crop_to_point((0, 0, 100, 100), (350, 50), 400, 200) == (0, 100, 100, 100)
    # y = 195 is below the crop: top = min(width - side, y - side + 10) = 105, 5 rows below the image.
    assert ch.move_crop_to_point((0, 0, 100, 100), (50, 195), 400, 200) == (105, 0, 100, 100)
    # Points left of / above the crop move it to 10 px before them, never below 0.
    assert ch.move_crop_to_point((50, 60, 100, 100), (5, 30), 400, 200) == (20, 0, 100, 100)


def test_crops_moved_off_the_image_are_black_like_the_validator():
    data = photo_like_jpeg(3, 400, 200)
    # (seed 5 draws a 185 px crop at top 15, left 11) a point below the image pulls the crop 70 px below
    # it, or wholly off it; one left of the image pins the crop to the left edge
    for point, expected_top, expected_left in [((120, 260), 85, 11), ((200, 390), 215, 15), ((-30, 150), 15, 0)]:
        params = ch.draw_challenge_params(400, 200, level=1, rng=5, mask_center=point)
        assert params.drawn_crop_box == (15, 11, 185, 185)
        assert params.crop_box == (expected_top, expected_left, 185, 185)
        ours, _ = ch.render_challenge(data, params, exact=True)
        theirs, used = ref.reference_array(Image.open(io.BytesIO(data)), 1, angle=params.angle,
                                           crop_box=params.drawn_crop_box, mask_center=point)
        assert used["crop_box"] == params.crop_box
        assert (np.abs(ours.astype(int) - theirs) > 1).mean() < 1e-3
        rows_below = round((expected_top + 185 - 200) / 185 * ch.TARGET_SIZE)
        if rows_below >= ch.TARGET_SIZE:
            assert ours.max() == 0
        elif rows_below > 0:
            assert ours[ch.TARGET_SIZE - rows_below + 2:].max() == 0
            assert ours[: ch.TARGET_SIZE - rows_below - 2].max() > 0


def test_mask_center_must_be_integer_pixels():
    with pytest.raises(ValueError, match="mask_center"):
        ch.draw_challenge_params(100, 100, level=1, rng=0, mask_center=(10.5, 3))
    with pytest.raises(ValueError, match="mask_center"):
        ch.draw_challenge_params(100, 100, level=1, rng=0, mask_center=(10,))
    assert ch.draw_challenge_params(100, 100, level=1, rng=0, mask_center=(10.0, 3)).crop_box is not None


# --- the reduced-scale routes ---

def test_reduced_decode_stays_close_to_the_exact_path():
    data = photo_like_jpeg(4, 1280, 720)
    reductions = set()
    for seed in range(6):
        params = ch.draw_challenge_params(1280, 720, level=seed % 2, rng=seed)
        exact, _ = ch.render_challenge(data, params, exact=True)
        fast, reduction = ch.render_challenge(data, params)
        reductions.add(reduction)
        assert psnr(exact, fast) > 36  # the JPEG q75 that follows costs about 35 dB on these images
        assert abs(exact.mean() - fast.mean()) < 0.5
        loaded = Image.open(io.BytesIO(data)).convert("RGB")  # no draft possible: rendered at full size
        from_loaded, loaded_reduction = ch.render_challenge(loaded, params)
        assert loaded_reduction == 1 and psnr(exact, from_loaded) > 45
        assert np.abs(exact.astype(int) - from_loaded).max() <= 1  # only the fast kernels' rounding
    assert reductions >= {2}


def test_the_fast_resize_is_the_validators_arithmetic():
    """Bit-equal to torch's float kernel but where a sum's last bit meets a whole grey level: about one
    pixel in a thousand on textured windows, about one in ten on flat ones (torch adds with fused
    multiply-adds there); never more than one level, no bias. Windows smaller than 224 are upsampled."""
    rng = np.random.default_rng(0)
    photo = decoded(photo_like_jpeg(8, 900, 900))
    counts = {"textured": [0, 0, 0], "flat": [0, 0, 0]}  # differing pixels, pixels, signed sum
    for side in (150, 223, 224, 336, 401, 469, 650, 900):
        flat = np.full((side, side, 3), rng.integers(1, 255), np.uint8)
        flat[: side // 3] = rng.integers(1, 255)
        windows = {"textured": [photo[:side, :side], rng.integers(0, 256, (side, side, 3), dtype=np.uint8)],
                   "flat": [flat]}
        for kind, arrays in windows.items():
            for window in arrays:
                exact = ch._resize_like_validator(np.ascontiguousarray(window)).astype(int)
                fast = ch._resize_fast_from_columns(np.ascontiguousarray(window.transpose(1, 0, 2))).astype(int)
                assert np.abs(fast - exact).max() <= 1, (side, kind)
                count = counts[kind]
                count[0] += int((fast != exact).sum())
                count[1] += fast.size
                count[2] += int((fast - exact).sum())
    assert counts["textured"][0] / counts["textured"][1] < 0.005
    assert counts["flat"][0] / counts["flat"][1] < 0.25
    assert all(abs(signed) / total < 0.02 for _, total, signed in counts.values())


def test_the_fast_resize_weights_are_torchs():
    for side in (2, 5, 223, 224, 225, 469, 1000, 3024):
        identity = torch.eye(side)[None, None]
        weights = torch.nn.functional.interpolate(identity, size=(side, 224), mode="bilinear",
                                                  align_corners=False, antialias=True)[0, 0].T.numpy()
        assert np.array_equal(ch._antialias_weights(side).toarray(), weights), side


@pytest.mark.parametrize("size, corner", [((640, 360), (630, 355)), ((360, 640), (355, 630))])
def test_a_transposed_window_holds_the_same_samples(size, corner):
    """Every third crop is moved towards a far corner: below the landscape image, past the portrait one's
    right edge (the validator's width/height swap), so both black masks are exercised."""
    data = photo_like_jpeg(4, *size)
    full = decoded(data)
    reduced = np.asarray(ch.store_copy(data)[0])
    scale = (reduced.shape[1] / size[0], reduced.shape[0] / size[1])
    moved = differing = samples = 0
    for seed in range(15):
        params = ch.draw_challenge_params(*size, level=1, rng=seed, mask_center=corner if seed % 3 == 0 else None)
        top, left, side, _ = params.crop_box
        moved += top + side > size[1] or left + side > size[0]
        for rgb, (scale_x, scale_y) in ((full, (1.0, 1.0)), (reduced, scale)):
            window = ch._rotated_window(rgb, scale_x, scale_y, params)
            columns = ch._rotated_window(rgb, scale_x, scale_y, params, transposed=True)
            differing += int((columns != window.transpose(1, 0, 2)).any(axis=2).sum())
            samples += window.shape[0] * window.shape[1]
    assert moved >= 2
    # OpenCV 4's fixed-point map can move a few ties by a pixel; OpenCV 5.1 gives the same samples
    assert differing / samples < 1e-3
    if int(cv2.__version__.split(".")[0]) >= 5:
        assert differing == 0


def test_the_level_draw_is_numpys_choice():
    """The same draws as ``rng.choice(levels, p=probs)``: seeded challenges stay what they were."""
    for probs in (None, {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4}, {3: 0.5, 1: 0.5, 0: 0.0, 2: 0.0}):
        expected = dict(sorted((probs or ch.LEVEL_PROBS).items()))
        for seed in range(300):
            ours, theirs = np.random.default_rng(seed), np.random.default_rng(seed)
            level = ch.draw_challenge_params(64, 48, rng=ours, level_probs=probs).level
            assert level == theirs.choice(list(expected), p=list(expected.values()))


def test_store_copy_keeps_every_crop_at_336_pixels():
    assert ch.store_size(1920, 1080) == (1002, 564)  # smallest crop round(sqrt(0.2 * 1920 * 1080)) = 644
    assert ch.store_size(300, 200) == (300, 200)
    rng = np.random.default_rng(1)
    for width, height in rng.integers(100, 5000, (200, 2)):
        stored = ch.store_size(int(width), int(height))
        smallest_crop = min(round(math.sqrt(0.2 * stored[0] * stored[1])), *stored)
        assert smallest_crop >= min(ch.MIN_DECODED_CROP, round(math.sqrt(0.2 * width * height)), width, height)


def test_rendering_from_a_store_copy():
    data = photo_like_jpeg(5, 1280, 720)
    copy, original = ch.store_copy(data)
    assert original == (1280, 720) and copy.size == ch.store_size(1280, 720)
    buffer = io.BytesIO()
    copy.save(buffer, format="JPEG", quality=95)
    for seed in range(4):
        params = ch.draw_challenge_params(*original, level=seed % 2, rng=seed)
        exact, _ = ch.render_challenge(data, params, exact=True)
        stored, _ = ch.render_challenge(buffer.getvalue(), params)
        assert psnr(exact, stored) > 32
    image, info = ch.simulate_challenge(buffer.getvalue(), rng=0, source_size=original)
    assert info["source_size"] == original and image.size == (224, 224)
    with pytest.raises(ValueError, match="exact"):
        ch.render_challenge(buffer.getvalue(), params, exact=True)
    with pytest.raises(ValueError, match="params are for"):
        ch.render_challenge(photo_like_jpeg(5, 300, 300), params)


# --- the challenge as sent ---

def pil_quality_75_tables():
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="JPEG", quality=75)
    return Image.open(buffer).quantization


def test_every_challenge_is_a_224_jpeg_with_pil_default_settings(sources):
    tables = pil_quality_75_tables()
    data = sources[(500, 375)]
    levels = set()
    for seed in range(12):
        image, info = ch.simulate_challenge(data, rng=seed)
        levels.add(info["level"])
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (224, 224)
        assert image.quantization == tables
        assert JpegImagePlugin.get_sampling(image) == 2  # 4:2:0
        assert info["jpeg_bytes"] == image.fp.getvalue()
    assert levels == {0, 1, 2, 3}


def test_info_describes_the_draw(sources):
    data = sources[(640, 480)]
    for level in range(4):
        _, info = ch.simulate_challenge(data, level=level, rng=level)
        assert info["level"] == level and set(info["distortions"]) == set(ch.DISTORTION_KINDS)
        assert info["source_size"] == (640, 480)
        if level == 0:
            assert info["angle"] is None and info["crop_box"] is None
        else:
            assert -20 <= info["angle"] <= 20 and info["crop_box"][2] == info["crop_box"][3]
        active = {kind for kind, value in info["distortions"].items() if value}
        allowed = {kind: highest for kind, highest in ch.LEVEL_DISTORTIONS[level]}
        assert active <= set(allowed)
        assert all(info["distortions"][kind] <= allowed.get(kind, 0) for kind in ch.DISTORTION_KINDS)


def test_seeded_challenges_repeat_and_inputs_of_any_kind_agree(tmp_path, sources):
    data = sources[(300, 420)]
    path = tmp_path / "source.jpg"
    path.write_bytes(data)
    runs = [ch.simulate_challenge(source, level=3, rng=11)[1]["jpeg_bytes"]
            for source in (data, path, str(path), Image.open(io.BytesIO(data)), data)]
    assert len(set(runs)) == 1
    generator_run = ch.simulate_challenge(data, level=3, rng=np.random.default_rng(11))[1]["jpeg_bytes"]
    assert generator_run == runs[0]
    assert ch.simulate_challenge(data, level=3, rng=12)[1]["jpeg_bytes"] != runs[0]


def test_level_and_level_probs_are_checked():
    with pytest.raises(ValueError, match="level"):
        ch.draw_challenge_params(100, 100, level=4)
    with pytest.raises(ValueError, match="sum to 1"):
        ch.draw_challenge_params(100, 100, level_probs={0: 0.5, 1: 0.4})
    with pytest.raises(ValueError, match="level_probs"):
        ch.draw_challenge_params(100, 100, level_probs={0: 0.5, 5: 0.5})
    with pytest.raises(ValueError, match="image"):
        ch.simulate_challenge(12345)
    assert {ch.draw_challenge_params(100, 100, level_probs={3: 1.0}, rng=s).level for s in range(20)} == {3}


def test_training_transform_gives_distinct_challenges_per_call(sources):
    transform = ch.ChallengeTransform(seed=0)
    data = sources[(500, 375)]
    first = [np.asarray(transform(data)) for _ in range(3)]
    assert all(image.shape == (224, 224, 3) for image in first)
    assert not np.array_equal(first[0], first[1])
    again = ch.ChallengeTransform(seed=0)
    assert np.array_equal(np.asarray(again(data)), first[0])


def test_training_pixels_are_the_miners_decode_of_the_challenge_sent(tmp_path, sources):
    """``challenge_pixels`` (the training path: OpenCV's JPEG round trip, no PIL objects) gives, draw for
    draw, exactly the pixels PIL decodes from ``simulate_challenge``'s JPEG: at every level, level -1
    included, from a source and from both store copies; the transform's ``pixels`` likewise."""
    assert ch.opencv_jpeg_matches_pil()  # on this machine the fast round trip is the one that runs
    data = photo_like_jpeg(9, 1280, 720)
    raw = tmp_path / "copy.train.npy"
    raw.write_bytes(ch.store_copy_bytes(data, "reduced_raw")[0])
    inputs = [(data, None), (ch.store_copy_bytes(data, "reduced")[0], (1280, 720)), (str(raw), (1280, 720)),
              (sources[(300, 420)], None)]
    for (image, size), level in zip(inputs * 5, [-1, 0, 1, 2, 3] * 4, strict=True):
        for seed in range(3):
            _, info = ch.simulate_challenge(image, level=level, rng=seed, source_size=size)
            pixels = ch.challenge_pixels(image, level=level, rng=seed, source_size=size)
            assert pixels.dtype == np.uint8 and np.array_equal(pixels, decoded(info["jpeg_bytes"]))
    transform, twin = ch.ChallengeTransform(seed=4), ch.ChallengeTransform(seed=4)
    assert np.array_equal(transform.pixels(data), np.asarray(twin(data)))


def test_a_stored_level_0_challenge_is_the_validators_and_leaves_every_draw_alone(tmp_path):
    """The reduced stores keep each image's level-0 challenge (``level0_challenge_jpeg``): a drawn level 0
    decodes it, giving the validator's exact pixels (the rendered fast path is within 1 grey level before the
    JPEG), and every draw and every other level is what it is without it."""
    cached = ch.validator_cache(photo_like_jpeg(6, 1280, 720))
    raw = tmp_path / "copy.train.npy"
    raw.write_bytes(ch.store_copy_bytes(cached, "reduced_raw")[0])
    level0 = tmp_path / "copy.level0.jpg"
    level0.write_bytes(ch.level0_challenge_jpeg(cached))
    sent, _ = ch.simulate_challenge(cached, level=0, exact=True)
    exact = np.array(sent.convert("RGB"))
    levels = set()
    for seed in range(16):
        stored = ch.challenge_pixels(str(raw), rng=seed, source_size=(1280, 720), level0_jpeg=str(level0))
        rendered = ch.challenge_pixels(str(raw), rng=seed, source_size=(1280, 720))
        level = ch.draw_challenge_params(1280, 720, rng=seed).level
        levels.add(level)
        if level == 0:
            assert np.array_equal(stored, exact)
        else:
            assert np.array_equal(stored, rendered)
    assert levels == {0, 1, 2, 3}
    as_bytes = ch.challenge_pixels(str(raw), level=0, source_size=(1280, 720), level0_jpeg=level0.read_bytes())
    assert np.array_equal(as_bytes, exact)
    level0.write_bytes(level0.read_bytes()[:40])  # a truncated store file names itself
    with pytest.raises(ValueError, match="copy.level0.jpg: not a 224x224 level-0 challenge"):
        ch.challenge_pixels(str(raw), level=0, source_size=(1280, 720), level0_jpeg=str(level0))


def test_the_pil_round_trip_stands_in_where_opencv_would_differ(monkeypatch, small_images):
    monkeypatch.setattr(ch, "opencv_jpeg_matches_pil", lambda: False)
    monkeypatch.setattr(ch, "_opencv_round_trip", lambda rgb: pytest.fail("OpenCV's codec was used"))
    monkeypatch.setattr(ch, "_opencv_decoded", lambda jpeg: pytest.fail("OpenCV's codec was used"))
    for rgb in small_images[::2]:
        jpeg = ch.encode_challenge_jpeg(rgb)
        assert np.array_equal(ch.miner_decoded(rgb), decoded(jpeg))
        assert np.array_equal(ch._jpeg_decoded(jpeg), decoded(jpeg))


class SameImage(torch.utils.data.Dataset):
    def __init__(self, data: bytes, transform):
        self.data, self.transform = data, transform

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return torch.from_numpy(np.asarray(self.transform(self.data)).copy())


def test_training_transform_differs_across_workers_and_epochs(sources):
    torch.manual_seed(0)
    dataset = SameImage(sources[(300, 420)], ch.ChallengeTransform({1: 1.0}, seed=0))  # level 0 never varies
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2)
    epochs = [[batch[0].numpy().tobytes() for batch in loader] for _ in range(2)]
    assert len(set(epochs[0]) | set(epochs[1])) == 8  # no repeats across workers or epochs


# --- distributions (slow) ---

def chi_square_p(counts, probabilities) -> float:
    counts = np.asarray(counts, float)
    return stats.chisquare(counts, counts.sum() * np.asarray(probabilities)).pvalue


@pytest.mark.slow
def test_level_frequencies_match_the_validator():
    rng = np.random.default_rng(0)
    for probs in (None, {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4}):
        expected = list((probs or ch.LEVEL_PROBS).values())
        ours = np.bincount([ch.draw_challenge_params(64, 48, rng=rng, level_probs=probs).level
                            for _ in range(8000)], minlength=4)
        numpy_random = np.random.RandomState(1)
        theirs = np.bincount([ref.draw_reference_level(probs, numpy_random) for _ in range(8000)],
                             minlength=4)
        assert chi_square_p(ours, expected) > 1e-3
        assert chi_square_p(theirs, expected) > 1e-3
        assert stats.chi2_contingency([ours, theirs]).pvalue > 1e-3


@pytest.mark.slow
def test_distortion_rates_match_the_validator():
    """Level 2: CS, CC, JPEG each at 0 or 1 (half the time); level 3: all five at 0, 1 or 2 (a third each)."""
    rng = np.random.default_rng(2)
    py_random = __import__("random").Random(3)
    for level, highest in ((2, 1), (3, 2)):
        ours = [ch.draw_challenge_params(64, 48, level=level, rng=rng).distortions for _ in range(6000)]
        for kind in ch.DISTORTION_KINDS:
            counts = np.bincount([draw[kind] for draw in ours], minlength=highest + 1)
            if kind in dict(ch.LEVEL_DISTORTIONS[level]):
                assert chi_square_p(counts, [1 / (highest + 1)] * (highest + 1)) > 1e-3
                theirs = np.bincount([py_random.randint(0, highest) for _ in range(6000)],
                                     minlength=highest + 1)
                assert stats.chi2_contingency([counts, theirs]).pvalue > 1e-3
            else:
                assert counts[0] == 6000
    for level in (0, 1):
        assert all(value == 0 for value in ch.draw_challenge_params(64, 48, level=level,
                                                                    rng=0).distortions.values())


@pytest.mark.slow
@pytest.mark.parametrize("size", [(1920, 1080), (500, 375), (300, 900), (1000, 180)])
def test_rotation_and_crop_draws_match_torchvision(size):
    """Our numpy draws against torchvision's own get_params (10 tries, then the centre fallback)."""
    width, height = size
    rng = np.random.default_rng(4)
    torch.manual_seed(5)
    ours = np.array([ch._draw_crop(width, height, rng) for _ in range(4000)])
    theirs = np.array([transforms.RandomResizedCrop.get_params(torch.empty(3, height, width), [0.2, 1.0],
                                                               [1.0, 1.0])
                       for _ in range(4000)])
    for column in range(3):  # top, left, side
        if np.ptp(ours[:, column]) == 0:
            assert np.ptp(theirs[:, column]) == 0 and ours[0, column] == theirs[0, column]
        else:
            assert stats.ks_2samp(ours[:, column], theirs[:, column]).pvalue > 1e-3
    angles = [ch.draw_challenge_params(width, height, level=1, rng=rng).angle for _ in range(2000)]
    assert stats.kstest(angles, stats.uniform(-20, 40).cdf).pvalue > 1e-3


@pytest.mark.slow
def test_whole_challenges_have_the_validators_distribution():
    """Each side draws its own parameters; per level, brightness, contrast and sharpness agree (KS).

    Level 0 has no randomness: its one image is compared directly (the default reduced-scale decode).
    """
    data = photo_like_jpeg(9, 1024, 768)
    torch.manual_seed(0)
    py_random, noise = __import__("random").Random(0), np.random.default_rng(0)

    def features(jpeg: bytes) -> tuple[float, float, float]:
        grey = decoded(jpeg).astype(float).mean(axis=2)
        return grey.mean(), grey.std(), np.abs(np.diff(grey, axis=1)).mean()

    level_zero = decoded(ch.simulate_challenge(data, level=0, rng=0)[1]["jpeg_bytes"])
    assert psnr(level_zero, decoded(ref.reference_jpeg(Image.open(io.BytesIO(data)), 0)[0])) > 35
    for level in (1, 2, 3):
        ours = np.array([features(ch.simulate_challenge(data, level=level, rng=seed)[1]["jpeg_bytes"])
                         for seed in range(60)])
        theirs = np.array([features(ref.reference_jpeg(Image.open(io.BytesIO(data)), level, noise_rng=noise,
                                                       py_random=py_random)[0]) for _ in range(60)])
        for column in range(3):
            assert stats.ks_2samp(ours[:, column], theirs[:, column]).pvalue > 1e-3, (level, column)


def test_the_raw_store_holds_the_reduced_copys_pixels_and_names_a_bad_file(tmp_path):
    data = photo_like_jpeg(6, 1280, 720)
    raw, size = ch.store_copy_bytes(data, "reduced_raw")
    path = tmp_path / f"copy{ch.STORE_SUFFIXES['reduced_raw']}"
    path.write_bytes(raw)
    assert size == ch.store_size(1280, 720)
    assert np.array_equal(ch.load_raw(path), np.asarray(ch.store_copy(data)[0]))
    assert str(path) in ch._RAW_LAYOUTS  # read again without its header, the same pixels
    assert np.array_equal(ch.load_raw(path), np.asarray(ch.store_copy(data)[0]))
    assert np.array_equal(ch.load_raw(io.BytesIO(raw)), ch.load_raw(path))  # an open file as well
    fallback = ch.challenge_pixels(str(path), level=-1, source_size=(1280, 720))  # level -1 encodes it as is
    assert fallback.shape == (*size[::-1], 3)
    smaller, _ = ch.store_copy_bytes(photo_like_jpeg(7, 1000, 600), "reduced_raw")
    replacement = tmp_path / "replacement.npy"
    replacement.write_bytes(smaller)
    os.replace(replacement, path)  # as the store writes: a new file under the name, of another size
    assert ch.load_raw(path).shape == (*ch.store_size(1000, 600)[::-1], 3)
    path.write_bytes(raw)
    params = ch.draw_challenge_params(1280, 720, level=1, rng=0)
    from_raw, _ = ch.render_challenge(str(path), params)
    assert psnr(ch.render_challenge(data, params, exact=True)[0], from_raw) > 40
    path.write_bytes(raw[:100])  # truncated
    with pytest.raises(ValueError, match=f"{path.name}: not a raw image store file"):
        ch.render_challenge(str(path), params)
    np.save(path, np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="must hold HxWx3 uint8 RGB pixels"):
        ch.load_raw(path)
    with pytest.raises(ValueError, match="store must be one of"):
        ch.store_copy_bytes(data, "raw")
