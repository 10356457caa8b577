"""The texts of the Hugging Face repo: NATIX ``model_card.json``, ``README.md``, the miner's ``miner.yaml``.

NATIX (docs/Mining.md) asks for ``model_card.json`` with ``model_name``, ``description``, ``version``
(X.Y.Z), ``submitted_by`` (the miner's hotkey, an SS58 address) and ``submission_time`` (unix seconds).
The hotkey check is a real SS58 decode: base58, a one-byte network prefix 42 (Bittensor's format)
followed by a 32-byte public key, and the 2-byte checksum blake2b-512(b"SS58PRE" + prefix + key)[:2].
A demo run may carry any ``submitted_by``; its card then says ``"demo": true``.
"""

from __future__ import annotations

import hashlib
import re
import time

from streetvision.errors import StreetvisionError

B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
BITTENSOR_SS58_PREFIX = 42
HF_REPO_PLACEHOLDER = "<hf-user>/<repo-name>"
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_HF_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ModelCardError(StreetvisionError, ValueError):
    """A model card value NATIX would reject; the message names the config key."""


def base58_decode(text: str) -> bytes:
    """Bitcoin-alphabet base58 (the one SS58 uses); ValueError on a foreign character."""
    number = 0
    for char in text:
        digit = B58_ALPHABET.find(char)
        if digit < 0:
            raise ValueError(f"{char!r} is not a base58 character")
        number = number * 58 + digit
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * (len(text) - len(text.lstrip("1"))) + body


def ss58_problem(address: str) -> str | None:
    """Why ``address`` is not a Bittensor SS58 hotkey (None when it is one)."""
    try:
        raw = base58_decode(address)
    except ValueError as err:
        return f"not base58 ({err})"
    if len(raw) != 35:
        return f"decodes to {len(raw)} bytes, not 35 (1-byte prefix + 32-byte key + 2-byte checksum)"
    if raw[0] != BITTENSOR_SS58_PREFIX:
        return f"SS58 network prefix {raw[0]}, not {BITTENSOR_SS58_PREFIX} (Bittensor addresses start with 5)"
    if hashlib.blake2b(b"SS58PRE" + raw[:-2], digest_size=64).digest()[:2] != raw[-2:]:
        return "SS58 checksum mismatch (a typo?)"
    return None


def check_hf_repo(hf_repo: str | None) -> str | None:
    if hf_repo is not None and not _HF_REPO.match(hf_repo):
        raise ModelCardError(f"config key 'bundle.hf_repo': {hf_repo!r} is not a Hugging Face repo id "
                             "(user/name)")
    return hf_repo


DEMO_NOTE = "DEMO export, not a NATIX submission."


def build_model_card(*, model_name: str, description: str, version: str, submitted_by: str, architecture: str,
                     notes: str, demo: bool = False, submission_time: int | None = None) -> dict:
    """The NATIX card plus ``architecture`` and ``notes``; errors name the ``bundle.model_card`` key."""
    for key, value in (("model_name", model_name), ("description", description)):
        if not str(value or "").strip():
            raise ModelCardError(f"config key 'bundle.model_card.{key}': must not be empty")
    if not _VERSION.match(str(version)):
        raise ModelCardError(f"config key 'bundle.model_card.version': {version!r} is not X.Y.Z")
    problem = None if demo else ss58_problem(str(submitted_by))
    if problem:
        raise ModelCardError(f"config key 'bundle.model_card.submitted_by': {submitted_by!r} is not a "
                             f"hotkey: {problem} (or mark the run as a demo)")
    card = {"model_name": model_name, "description": description, "version": str(version),
            "submitted_by": submitted_by,
            "submission_time": int(time.time()) if submission_time is None else int(submission_time),
            "architecture": architecture, "notes": notes}
    if demo:
        card["demo"] = True
        if not notes.startswith(DEMO_NOTE):  # the HF export re-builds the bundle's card: say it once
            card["notes"] = f"{DEMO_NOTE} {notes}".strip()
    return card


def miner_yaml(hf_repo: str | None) -> str:
    """The stock miner's detector config (``IMAGE_DETECTOR=ViT`` reads ``hf_repo`` from it)."""
    repo = hf_repo or HF_REPO_PLACEHOLDER
    note = "" if hf_repo else "  # placeholder: put the repo id you push this folder to"
    return (f"# NATIX stock miner: IMAGE_DETECTOR=ViT, IMAGE_DETECTOR_CONFIG=<path to this file>\n"
            f"hf_repo: '{repo}'{note}\n"
            "config_name: 'config.json'\n"
            "weights: 'model.safetensors'\n")


EVAL_METRICS = {"mcc": "MCC", "accuracy": "accuracy", "natix_reward": "NATIX reward"}  # at the 0.5 rounding
EVAL_DATASET = "streetvision/val_test"  # the model-index dataset type: the workflow's held-out split
# model-index metric types: the Hub's metric ids where one exists (MCC is "matthews_correlation")
HUB_METRIC_TYPES = {"mcc": "matthews_correlation", "accuracy": "accuracy", "natix_reward": "natix_reward"}


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple) and len(value) == 2:
        return f"[{value[0]:.4g}, {value[1]:.4g}]"
    return "" if value is None else str(value)


def _metrics_table(evaluation: dict[str, dict]) -> str:
    """One row per evaluation set: n, then each metric and its 95 % interval (``<metric>_ci``)."""
    if not evaluation:
        return "No evaluation numbers were passed to the export.\n"
    columns = ["n"] + [c for key in EVAL_METRICS for c in (key, f"{key}_ci")]
    columns = [c for c in columns if any(c in row for row in evaluation.values())]
    header = [c.replace("_ci", " 95 % CI") for c in columns]
    lines = ["| set | " + " | ".join(header) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in evaluation.items():
        lines.append(f"| {name} | " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def eval_results(evaluation: dict[str, dict]) -> list:
    """The card's ``model-index``: each set's MCC, accuracy and reward; an interval goes into the metric's
    name (the format has no field for it); an undefined metric (one class present) is left out. Each set
    is its own dataset config (the Hub groups results by dataset type, config and split, not by name). The
    dataset type is the workflow's own split (``EVAL_DATASET``), never a Hub data set the model trained on:
    val_test is drawn from the experiment's data, which may mix several sources or generated images."""
    from huggingface_hub import EvalResult

    results = []
    for name, row in evaluation.items():
        for key, label in EVAL_METRICS.items():
            if row.get(key) is None:
                continue
            interval = row.get(f"{key}_ci")
            shown = f"{label} (95 % CI [{interval[0]:.4f}, {interval[1]:.4f}])" if interval else label
            results.append(EvalResult(task_type="image-classification", dataset_type=EVAL_DATASET,
                                      dataset_name=name, dataset_config=re.sub(r"[^a-z0-9]+", "-",
                                                                                name.lower()).strip("-"),
                                      dataset_split="val_test", metric_type=HUB_METRIC_TYPES[key],
                                      metric_value=float(row[key]), metric_name=shown))
    return results


def card_header(*, license: str, tags: list[str], base_model: str | None, datasets: list[str],
                model_name: str, evaluation: dict[str, dict]) -> str:
    """The README's metadata block, written by huggingface_hub (``ModelCardData``)."""
    from huggingface_hub import ModelCardData

    results = eval_results(evaluation)
    data = ModelCardData(license=license, library_name="transformers", pipeline_tag="image-classification",
                         tags=tags, base_model=base_model, datasets=datasets or None, model_name=model_name,
                         eval_results=results or None)
    return f"---\n{data.to_yaml()}\n---\n"


def render_readme(card: dict, *, architecture: str, backbone: str, img_size: int, license: str,
                  hf_repo: str | None, fold: dict, preprocessing: str,
                  evaluation: dict[str, dict] | None = None, training: str = "", tags: tuple[str, ...] = (),
                  base_model: str | None = None, datasets: tuple[str, ...] = ()) -> str:
    """README.md with the Hugging Face metadata header (huggingface_hub's ``ModelCard``); numbers come from
    the caller. ``evaluation``: {set name: {"n", "mcc", "mcc_ci", "accuracy", ...}}."""
    if not re.match(r"^[a-z0-9][a-z0-9.+-]*$", license or ""):
        raise ModelCardError(f"config key 'hf_export.license': {license!r} is not a Hugging Face license id "
                             "(e.g. mit)")
    repo = hf_repo or HF_REPO_PLACEHOLDER
    all_tags = list(dict.fromkeys(["image-classification", "roadwork", "natix", "streetvision", "bittensor",
                                   *tags]))
    header = card_header(license=license, tags=all_tags, base_model=base_model, datasets=list(datasets),
                         model_name=f"{card['model_name']} {card['version']}", evaluation=evaluation or {})
    demo = ("\n> **Demo export.** Trained on the workflow's synthetic scenes; not a NATIX submission and not "
            "meant for mining.\n" if card.get("demo") else "")
    placeholder = "" if hf_repo else (
        f"\n`{HF_REPO_PLACEHOLDER}` stands for the Hugging Face repo you push this folder to; no "
        "`bundle.hf_repo` was configured. Replace it in `miner.yaml` and below.\n")
    from huggingface_hub import ModelCard

    return ModelCard(f"""{header}
# {card['model_name']} {card['version']}
{demo}
{card['description']}

Binary roadwork classifier for the NATIX StreetVision subnet (Bittensor): the single label `Roadwork`
scores whether a street-level image shows road works. Architecture: `{architecture}` converted from the
timm backbone `{backbone}` at {img_size}x{img_size} px, exported by the streetvision workflow.

## Use

```python
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

pipe = pipeline("image-classification", model=AutoModelForImageClassification.from_pretrained("{repo}"),
                feature_extractor=AutoImageProcessor.from_pretrained("{repo}", use_fast=True))
p = {{d["label"]: d["score"] for d in pipe("street.jpg")}}["Roadwork"]   # round(p) is the decision
```

Stock NATIX miner: `IMAGE_DETECTOR=ViT`, `IMAGE_DETECTOR_CONFIG=/path/to/miner.yaml` (this repo's
`miner.yaml`), `MODEL_URL=https://huggingface.co/{repo}` in `miner.env`.
{placeholder}
## Output

One logit, sigmoid in the pipeline. The decision policy is folded into the classifier: with stage-1
logit l, threshold t = {fold['threshold']:.6g} (on sigmoid(l)) and temperature
T = {fold['temperature']:.6g}, the model outputs z = (l - logit t) / T + m with tie margin
m = {fold['tie_margin']:g}. So the score is above 0.5 exactly when the stage-1 probability is >= t
(validators round at 0.5, and 0.5 itself down; m puts an image exactly at t on the positive side), and
it is the temperature-calibrated probability with its odds divided by the calibrated odds of t (equal to
it, up to m, when t = 0.5).

## Preprocessing

{preprocessing}

## Training and evaluation

{training or 'See the streetvision workflow manifests that produced this export.'}

{_metrics_table(evaluation or {})}
## Limits

- Trained for NATIX validator challenges (224x224 JPEGs); other image sources, sizes or aspect ratios
  (the processor squashes non-square images) are out of scope.
- Images whose stage-1 logit lies within {fold['tie_margin'] * fold['temperature']:.1e} below logit t are
  positive here but negative in the workflow's own bundle (the tie margin above); float32 arithmetic
  differs between timm and transformers by about 1e-6 in logit.
- The score is a probability only in the folded sense above; do not average it with other models' scores.

## NATIX model card

`model_card.json`: submitted by `{card['submitted_by']}` at unix time {card['submission_time']}.
""").content
