import numpy as np
import pytest
import torch
from PIL import Image

from streetvision.data.transforms import ValidatorAugment, eval_transform, level_transform

MEAN, STD = [0.5] * 3, [0.5] * 3


@pytest.fixture
def image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8))


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_levels_give_model_sized_tensors_and_are_seed_reproducible(image, level):
    transform = level_transform(level, 48, MEAN, STD)
    torch.manual_seed(7)
    first = transform(image)
    torch.manual_seed(7)
    assert torch.equal(first, transform(image))
    assert first.shape == (3, 48, 48) and first.dtype == torch.float32
    if level > 0:
        torch.manual_seed(8)
        assert not torch.equal(first, transform(image))


def test_level2_desaturates_and_level3_adds_noise():
    flat_red = Image.new("RGB", (96, 96), (220, 30, 30))
    clean = level_transform(0, 48, MEAN, STD)(flat_red)
    torch.manual_seed(0)
    level2 = level_transform(2, 48, MEAN, STD)(flat_red)
    level3 = level_transform(3, 48, MEAN, STD)(flat_red)
    colourfulness = lambda t: (t[0] - t[1]).abs().mean().item()  # noqa: E731
    assert colourfulness(level2) < 0.6 * colourfulness(clean)  # saturation factor <= 0.4
    assert clean.std(dim=(1, 2)).max() < 1e-3  # a flat image stays flat at L0
    assert level3.std(dim=(1, 2)).max() > 0.01  # noise survives the blur


def test_training_augment_draws_all_levels(image):
    augment = ValidatorAugment(32, MEAN, STD)
    calls = [0] * 4
    for i, level in enumerate(augment.levels):
        augment.levels[i] = lambda img, i=i, inner=level: (calls.__setitem__(i, calls[i] + 1), inner(img))[1]
    torch.manual_seed(0)
    for _ in range(400):
        augment(image)
    assert min(calls) > 60  # uniform over 4 levels


def test_eval_transform_is_deterministic(image):
    transform = eval_transform(40, MEAN, STD)
    assert torch.equal(transform(image), transform(image))
    assert transform(image).shape == (3, 40, 40)
