import numpy as np
import pytest
import torch
from PIL import Image

from streetvision.data.transforms import eval_transform

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


@pytest.fixture
def image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8))


def test_eval_transform_is_deterministic_model_sized_and_normalised(image):
    transform = eval_transform(32, MEAN, STD, "bicubic")
    out = transform(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert torch.equal(out, transform(image))
    flat = Image.new("RGB", (40, 40), (128, 128, 128))
    assert torch.allclose(eval_transform(40, MEAN, STD)(flat), torch.full((3, 40, 40),
                                                                          (128 / 255 - 0.5) / 0.25),
                          atol=1e-6)


def test_a_224_challenge_at_224_is_not_resampled():
    """Served models see the 224x224 wire image itself: at img_size 224 the resize is the identity."""
    pixels = np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    out = eval_transform(224, [0.0] * 3, [1.0] * 3)(Image.fromarray(pixels))
    assert torch.allclose(out * 255, torch.from_numpy(pixels).permute(2, 0, 1).float(), atol=1e-3)
