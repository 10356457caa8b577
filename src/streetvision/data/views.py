"""What a model is shown of an indexed image: the clean view, or a validator challenge.

- ``TrainingChallenge``: a fresh challenge per draw (the level from ``train.level_probs``), then the model's
  preprocessing: training sees exactly what validators send.
- ``EvaluationChallenge``: the *challenge pass* — one seeded challenge per image (``challenge.seed``, the
  image's content hash): phase 1, the bundle checks, the Hugging Face parity and the report all score
  the same JPEGs (224x224; full size at level -1). With ``level`` set, every image goes through that level
  (per-level scores; ``level=-1``: every image sent unaugmented).
- ``CleanView``: the image as a validator holds it (its cached copy), preprocessed: the pre-challenge view.
Every view starts from the index's ``challenge_path`` (``challenge.validator_cache`` of a real image) and
honours its ``level_fallback``; training challenges render from ``train_path`` when a reduced store
(``data.store: reduced_raw`` or ``reduced``) made a smaller copy of it, and decode a drawn level 0 from
``level0_path`` (the validator's level-0 JPEG, kept by those stores); evaluation never does.
``challenge_plan`` says which level and distortions each image's challenge has, without rendering it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torchvision import tv_tensors

from streetvision.data.challenge import (
    DISTORTION_KINDS,
    ChallengeTransform,
    draw_challenge_params,
    simulate_challenge,
)
from streetvision.data.datasets import open_rgb

DISTORTIONS = DISTORTION_KINDS  # the columns of a challenge plan


@dataclass(frozen=True)
class Sample:
    """One indexed image as the views need it."""

    path: str  # the bytes a validator builds its challenges from (its cached copy of a real image)
    key: int  # stable per image (from its content hash): seeds its evaluation challenge
    width: int
    height: int
    fallback: bool = False  # validators send it unaugmented (level -1) where they draw levels 1-3
    train_path: str | None = None  # what training challenges render from (data.store); None = ``path``
    level0_path: str | None = None  # its level-0 challenge JPEG (the reduced stores); None = render it


def samples_of(frame: pd.DataFrame) -> list[Sample]:
    """Index rows -> Samples: each image's challenge source (``challenge_path``) and its level -1 rule
    (``level_fallback``); an index without those columns (a hand-made one) means the file, no fallback."""
    paths = frame["challenge_path"] if "challenge_path" in frame else frame["path"]
    fallbacks = frame["level_fallback"] if "level_fallback" in frame else [False] * len(frame)
    train_paths = frame["train_path"] if "train_path" in frame else [None] * len(frame)
    level0_paths = frame["level0_path"] if "level0_path" in frame else [None] * len(frame)
    return [Sample(str(path), int(str(sha)[:15], 16), int(width), int(height), bool(fallback),
                   None if train is None or train == path else str(train),
                   None if level0 is None or pd.isna(level0) else str(level0))
            for path, sha, width, height, fallback, train, level0 in zip(
                paths, frame["sha256"], frame["width"], frame["height"], fallbacks, train_paths, level0_paths,
                strict=True)]


def challenge_rng(seed: int, key: int, level: int | None = None) -> np.random.Generator:
    """The generator of one image's evaluation challenge (a separate stream per forced level)."""
    return np.random.default_rng([seed, key] if level is None else [seed, key, 1 + level])


class CleanView:
    def __init__(self, preprocess):
        self.preprocess = preprocess

    def __call__(self, sample: Sample):
        return self.preprocess(open_rgb(sample.path))


class TrainingChallenge:
    """A new challenge every time an image is drawn (per-worker generators, see ``ChallengeTransform``),
    handed to ``preprocess`` (a torchvision v2 transform) as the miner's decoded pixels: a uint8
    ``tv_tensors.Image`` (C, H, W)."""

    def __init__(self, preprocess, level_probs: list[float], seed: int | None = None):
        self.preprocess = preprocess
        self.challenge = ChallengeTransform(dict(enumerate(level_probs)), seed=seed)

    def __call__(self, sample: Sample):
        if sample.train_path is None:
            source, size = sample.path, None
        else:  # the reduced store: parameters drawn on the original size, rendered from the copy
            source, size = sample.train_path, (sample.width, sample.height)
        # a drawn level 0 reads the image's stored level-0 challenge (the reduced stores) instead
        pixels = self.challenge.pixels(source, source_size=size, fallback=sample.fallback,
                                       level0_jpeg=sample.level0_path)
        # a CHW uint8 image tensor (a view of the pixels): what v2 transforms take without a PIL detour
        return self.preprocess(tv_tensors.Image(torch.from_numpy(pixels).permute(2, 0, 1)))


class EvaluationChallenge:
    """The challenge pass: the same seeded challenge of each image every time (exact validator pixels).

    ``cache=True`` keeps each challenge's JPEG bytes (about 10 kB) for the next request, e.g. for the
    validation split a persistent DataLoader worker scores every epoch.
    """

    def __init__(self, seed: int, preprocess=None, level: int | None = None, cache: bool = False):
        self.seed, self.preprocess, self.level = seed, preprocess, level
        self._jpegs: dict[int, bytes] | None = {} if cache else None

    def image(self, sample: Sample):
        """The 224x224 JPEG the miner would receive, as PIL opens it."""
        jpeg = self._jpegs.get(sample.key) if self._jpegs is not None else None
        if jpeg is None:
            _, info = simulate_challenge(sample.path, level=self.level,
                                         rng=challenge_rng(self.seed, sample.key, self.level),
                                         fallback=sample.fallback, exact=True)
            jpeg = info["jpeg_bytes"]
            if self._jpegs is not None:
                self._jpegs[sample.key] = jpeg
        return Image.open(io.BytesIO(jpeg))

    def __call__(self, sample: Sample):
        return self.preprocess(self.image(sample).convert("RGB"))


def challenge_plan(samples: list[Sample], seed: int, level: int | None = None) -> pd.DataFrame:
    """Per image: the level and distortion levels of its evaluation challenge (the same draws
    ``EvaluationChallenge`` makes, replayed without decoding anything)."""
    rows = []
    for sample in samples:
        params = draw_challenge_params(sample.width, sample.height, level=level,
                                       rng=challenge_rng(seed, sample.key, level),
                                       fallback=sample.fallback)
        rows.append({"level": params.level, **{kind: params.distortions[kind] for kind in DISTORTIONS}})
    return pd.DataFrame(rows, columns=["level", *DISTORTIONS])
