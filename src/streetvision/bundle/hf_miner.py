"""Serve an exported Hugging Face repo exactly as the stock NATIX miner does, and check decision parity.

The stock miner (base_miner/detectors/vit_detector.py, ``IMAGE_DETECTOR=ViT``) builds
``pipeline("image-classification", model=AutoModelForImageClassification.from_pretrained(repo),
feature_extractor=AutoImageProcessor.from_pretrained(repo, use_fast=True))`` and answers the score of
the label ``Roadwork``; validators round it at 0.5 (0.5 itself rounds to 0).

``hf_parity`` compares that answer with our own model + policy on the same PIL images, either with the
installed transformers or, given ``pin_dir``, in a subprocess whose transformers comes from that
folder first on PYTHONPATH (e.g. 4.45.2, the miner's pin, installed by ``.ci/transformers-pin.sh``).
Run as ``python -m streetvision.bundle.hf_miner REPO IMAGE...`` it prints the scores as JSON.
``validator_payload`` and ``miner_image`` are the two ends of the wire: a challenge's JPEG as base64 in the
``ImageSynapse``, and the PIL image the stock miner opens from it.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from streetvision.bundle import files
from streetvision.bundle.hf_convert import LABEL, TIE_MARGIN
from streetvision.errors import StreetvisionError

PIN_VERSION = "4.45.2"
# Two float32 implementations of one network differ by ~1e-7 in the score; an image whose exact score is
# that close to 0.5 can round either way in either of them, so a flip there is arithmetic, not an export
# fault. Such "borderline" flips are counted apart; any other flip, or a score off by more than
# MAX_SCORE_DIFF (a wrong weight, resize or normalisation), fails the export.
BORDERLINE_SCORE = 1e-5
MAX_SCORE_DIFF = 1e-3
PIN_DIR_ENV = "STREETVISION_TRANSFORMERS_PIN_DIR"
DEFAULT_PIN_DIR = Path("~/.cache/streetvision/transformers-4.45.2").expanduser()
SRC_DIR = Path(__file__).resolve().parents[2]  # so the subprocess imports this very package


def load_miner_pipeline(repo: str | Path):
    """The stock miner's loading, call for call."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    return pipeline("image-classification", model=AutoModelForImageClassification.from_pretrained(str(repo)),
                    feature_extractor=AutoImageProcessor.from_pretrained(str(repo), use_fast=True))


def validator_payload(jpeg_bytes: bytes) -> str:
    """What a validator puts in ``ImageSynapse.image`` (natix/protocol.py): the challenge JPEG, base64."""
    return base64.b64encode(jpeg_bytes).decode("ascii")


def miner_image(payload: str):
    """How the stock miner opens a challenge (neurons/miner.py): base64-decoded and opened by PIL, as is."""
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(payload)))


def roadwork_score(pipe, image) -> float:
    """The miner's answer for one image: the score of the ``Roadwork`` label."""
    return {entry["label"]: entry["score"] for entry in pipe(image)}[LABEL]


def miner_scores(repo: str | Path, images) -> dict:
    """Scores of the images with the installed transformers, one call per image as the miner makes."""
    import transformers

    pipe = load_miner_pipeline(repo)
    return {"transformers": transformers.__version__, "model_class": type(pipe.model).__name__,
            "processor_class": type(pipe.image_processor).__name__,
            "scores": [roadwork_score(pipe, image) for image in images]}


def find_transformers_pin(pin_dir: str | Path | None = None) -> Path | None:
    """The folder holding transformers ``PIN_VERSION`` (argument, else $STREETVISION_TRANSFORMERS_PIN_DIR,
    else ``DEFAULT_PIN_DIR``), or None when it is not installed there."""
    folder = Path(pin_dir or os.environ.get(PIN_DIR_ENV) or DEFAULT_PIN_DIR).expanduser()
    installed = ((folder / f"transformers-{PIN_VERSION}.dist-info").is_dir()
                 and (folder / "transformers").is_dir())
    return folder.resolve() if installed else None


def pinned_miner_scores(repo: str | Path, images, pin_dir: str | Path, timeout: float = 900) -> dict:
    """``miner_scores`` in a subprocess whose transformers comes from ``pin_dir``.

    The images travel as PNG files (lossless: the subprocess decodes exactly the same pixels).
    """
    path = [str(pin_dir), str(SRC_DIR), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    with tempfile.TemporaryDirectory(prefix="hf-parity-") as tmp:
        paths = []
        for i, image in enumerate(images):
            paths.append(str(Path(tmp) / f"{i:05d}.png"))
            image.convert("RGB").save(paths[-1])
        done = subprocess.run([sys.executable, "-m", "streetvision.bundle.hf_miner", str(repo), *paths],
                              env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"miner-style load of {repo} with transformers from {pin_dir} "
                           f"failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def expected_scores(detector, images, margin: float = TIE_MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """(what the exported repo should answer, the bundle's decisions) from our model + policy, float64."""
    import torch

    from streetvision.bundle.policy import outputs

    with torch.inference_mode():
        logits = detector.model(detector.tensors(images).to(detector.device)).double().cpu().numpy()
    threshold, temperature = float(detector.policy["threshold"]), float(detector.policy["temperature"])
    folded = (logits - (math.log(threshold) - math.log1p(-threshold))) / temperature + margin
    return 1.0 / (1.0 + np.exp(-folded)), outputs(logits, detector.policy)["decision"]


def hf_parity(detector, repo: str | Path, images, *, pin_dir: str | Path | None = None,
              margin: float = TIE_MARGIN) -> dict:
    """The miner's answers for ``images`` against our model + policy (a bundle ``Detector``).

    ``decision_mismatches`` counts images where round-at-0.5 of the miner's score (0.5 -> 0, as
    validators round) differs from the bundle's decision while the exact score is more than
    ``BORDERLINE_SCORE`` from 0.5; it must be 0. Flips closer than that are ``borderline_flips``.
    ``max_abs_probability_diff`` compares the score with the folded probability computed from our model in
    float64.
    """
    images = list(images)
    served = pinned_miner_scores(repo, images, pin_dir) if pin_dir else miner_scores(repo, images)
    expected, decisions = expected_scores(detector, images, margin)
    return {"transformers": served["transformers"], "model_class": served["model_class"],
            "processor_class": served["processor_class"], "n": len(images),
            **compare_decisions(np.asarray(served["scores"], dtype=np.float64), expected, decisions)}


def compare_decisions(scores: np.ndarray, expected: np.ndarray, decisions: np.ndarray) -> dict:
    """The miner's ``scores`` against the exact ``expected`` scores and the bundle's ``decisions``."""
    flipped = (scores > 0.5) != decisions.astype(bool)
    borderline = flipped & (np.abs(expected - 0.5) <= BORDERLINE_SCORE)
    mismatched, borderline = np.flatnonzero(flipped & ~borderline), np.flatnonzero(borderline)
    return {"decision_mismatches": len(mismatched), "mismatched_images": mismatched[:20].tolist(),
            "borderline_flips": len(borderline), "borderline_images": borderline[:20].tolist(),
            "max_abs_probability_diff": float(np.max(np.abs(scores - expected))) if len(scores) else 0.0,
            "exactly_one_half": int(np.sum(scores == 0.5)), "positives": int(decisions.sum())}


class HFRepoError(StreetvisionError, ValueError):
    """A Hugging Face model folder the stock miner could not serve; the message names the file."""


def check_miner_labels(repo: Path) -> None:
    """The stock miner answers the score of the label ``Roadwork``: the repo's config must have it."""
    config_path = repo / "config.json"
    try:
        config = json.loads(config_path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HFRepoError(f"{config_path}: not a readable JSON file ({err})") from None
    labels = config.get("id2label") if isinstance(config, dict) else None
    if not isinstance(labels, dict) or LABEL not in labels.values():
        raise HFRepoError(f"{config_path}: id2label is {labels!r}, without the label {LABEL!r} whose score "
                          "the stock miner returns")


class HFDetector:
    """A Hugging Face repo served the stock miner's way, with the bundle ``Detector``'s interface."""

    def __init__(self, repo: str | Path):
        self.repo = Path(repo)
        check_miner_labels(self.repo)
        try:
            self.pipe = load_miner_pipeline(repo)
        except (OSError, ValueError, KeyError,
                TypeError) as err:  # what transformers raises for a broken folder
            raise HFRepoError(f"{self.repo}: transformers cannot load it the stock miner's way "
                              f"({err})") from None
        card = self.repo / "model_card.json"
        self.model_card = json.loads(card.read_text()) if card.is_file() else {}

    def predict_details(self, images) -> list[dict]:
        scores = [roadwork_score(self.pipe, image) for image in images]
        return [{"probability": s, "decision": int(s > 0.5)} for s in scores]

    def predict_batch(self, images) -> list[float]:
        return [d["probability"] for d in self.predict_details(images)]

    def __call__(self, image) -> float:
        return self.predict_batch([image])[0]


def is_hf_repo(path: str | Path) -> bool:
    """A transformers model folder (config.json) rather than a streetvision bundle (bundle.json)."""
    path = Path(path)
    return (path / "config.json").is_file() and not (path / files.INDEX).exists()


def load_hf_detector(repo: str | Path) -> HFDetector:
    """For ``streetvision predict --model <hf repo folder>``: the repo served as the stock miner does."""
    if not is_hf_repo(repo):
        raise HFRepoError(f"{repo}: not a Hugging Face model folder (no config.json, or it is a bundle)")
    return HFDetector(repo)


def main(argv: list[str]) -> int:
    from PIL import Image

    if len(argv) < 1:
        print("usage: python -m streetvision.bundle.hf_miner REPO [IMAGE...]", file=sys.stderr)
        return 2
    images = [Image.open(path) for path in argv[1:]]
    print(json.dumps(miner_scores(argv[0], images)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
