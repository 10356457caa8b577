"""Find and load the synthesize step's models: a local folder, or a snapshot already in the user's Hugging
Face cache (never the network). A model that is neither, or a snapshot without its config, is named before
any job starts (``check_models``, run by the plan)."""

from __future__ import annotations

import gc
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from streetvision.errors import StreetvisionError

log = logging.getLogger(__name__)

TRANSFORMERS_MARKER = "config.json"
DIFFUSERS_MARKER = "model_index.json"


class MissingModelError(StreetvisionError, FileNotFoundError):
    """A configured model is neither a local folder nor a complete snapshot in the Hugging Face cache."""


@dataclass(frozen=True)
class ModelRef:
    key: str  # the config key that names it (synthesize.captioner, ...)
    name: str  # an HF id or a local folder
    marker: str  # the file a complete copy has at its root


def required_models(settings: dict) -> list[ModelRef]:
    """The models a run with these ``synthesize`` settings loads (t2i/i2i only when some image uses it)."""
    refs = [ModelRef("synthesize.captioner", settings["captioner"], TRANSFORMERS_MARKER)]
    if settings["rewriter"] is not None:
        refs.append(ModelRef("synthesize.rewriter", settings["rewriter"], TRANSFORMERS_MARKER))
    if settings["i2i_share"] < 1:
        refs.append(ModelRef("synthesize.t2i.model", settings["t2i"]["model"], DIFFUSERS_MARKER))
    if settings["i2i_share"] > 0:
        refs.append(ModelRef("synthesize.i2i.model", settings["i2i"]["model"], DIFFUSERS_MARKER))
    return refs


def resolve_model(ref: ModelRef) -> Path:
    """The folder holding ``ref``'s files."""
    path = Path(ref.name).expanduser()
    looks_local = path.is_absolute() or ref.name.startswith((".", "~")) or ref.name.count("/") != 1
    if path.is_dir():
        folder = path
    elif looks_local:
        raise MissingModelError(f"config key '{ref.key}': model folder {ref.name} does not exist")
    else:
        folder = _cached_snapshot(ref)
    if not (folder / ref.marker).is_file():
        raise MissingModelError(f"config key '{ref.key}': {folder} has no {ref.marker}; it is not a complete "
                                f"copy of {ref.name} (re-download it, or save the model there with "
                                "save_pretrained)")
    return folder


def _cached_snapshot(ref: ModelRef) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(ref.name, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError) as err:
        raise MissingModelError(
            f"config key '{ref.key}': model {ref.name} is not in the Hugging Face cache ({HF_HUB_CACHE}) and "
            f"is not a local folder; nothing is downloaded at run time: fetch it first (`hf download "
            f"{ref.name}`) or point the key at a folder") from err


def check_models(settings: dict) -> dict[str, Path]:
    """Every required model's folder by config key; a ConfigError-style message listing all that are
    missing when any is."""
    found, missing = {}, []
    for ref in required_models(settings):
        try:
            found[ref.key] = resolve_model(ref)
        except MissingModelError as err:
            missing.append(str(err))
    if missing:
        raise MissingModelError("; ".join(missing))
    return found


def is_bitsandbytes_model(folder: Path) -> bool:
    config = json.loads((folder / TRANSFORMERS_MARKER).read_text())
    return (config.get("quantization_config") or {}).get("quant_method") == "bitsandbytes"


def release_memory() -> int | None:
    """Free what the last stage's models left (called once they are out of scope): the captioner and the
    LLM must be gone before SDXL loads, as on a validator's one GPU. Returns the CUDA bytes still
    allocated (None on CPU)."""
    import torch

    gc.collect()
    if not torch.cuda.is_available():
        return None
    torch.cuda.empty_cache()
    return int(torch.cuda.memory_allocated())


def _dtype(device: str, cuda_dtype):
    import torch

    return cuda_dtype if device.startswith("cuda") else torch.float32


def load_captioner(folder: Path, device: str):
    """(processor, BLIP-2 model) in fp16 on CUDA (as validators run it), fp32 on CPU."""
    import torch
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    processor = Blip2Processor.from_pretrained(folder, local_files_only=True)
    model = Blip2ForConditionalGeneration.from_pretrained(folder, local_files_only=True,
                                                          dtype=_dtype(device, torch.float16))
    return processor, model.to(device).eval()


def load_rewriter(folder: Path, device: str, key: str = "synthesize.rewriter"):
    """(tokenizer, causal LM): bf16 on CUDA; a bitsandbytes 4-bit model needs CUDA (the validators' default
    uses it only on GPU, the full-precision model on CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if is_bitsandbytes_model(folder) and not device.startswith("cuda"):
        raise MissingModelError(
            f"config key '{key}': {folder} is a bitsandbytes 4-bit model, which loads on a CUDA GPU only; "
            "this job has none. Use the full-precision model (unsloth/Meta-Llama-3.1-8B-Instruct, what "
            "validators run on CPU) or rewriter: null")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, device_map={"": device},
                                                 dtype=_dtype(device, torch.bfloat16))
    return tokenizer, model.eval()


def _has_fp16_variant(folder: Path) -> bool:
    return any(".fp16." in path.name for path in (folder / "unet").glob("*"))


def load_generators(t2i_folder: Path | None, i2i_folder: Path | None, device: str) -> dict:
    """{"t2i": pipeline, "i2i": pipeline} for the tasks with a folder. fp16 (its fp16 variant where the
    snapshot has one) on CUDA, fp32 on CPU; the same weights for both tasks load once and are shared.
    VAE slicing and tiling on, as validators run SDXL."""
    import torch
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    def load(cls, folder: Path):
        kwargs = {"dtype": _dtype(device, torch.float16), "local_files_only": True}
        if device.startswith("cuda") and _has_fp16_variant(folder):
            kwargs["variant"] = "fp16"
        log.info("loading %s from %s (%s)", cls.__name__, folder, kwargs.get("variant", "full weights"))
        return cls.from_pretrained(folder, **kwargs)

    pipelines = {}
    if t2i_folder is not None:
        pipelines["t2i"] = load(StableDiffusionXLPipeline, t2i_folder)
    if i2i_folder is not None:
        same = t2i_folder is not None and i2i_folder.resolve() == t2i_folder.resolve()
        pipelines["i2i"] = (StableDiffusionXLImg2ImgPipeline(**pipelines["t2i"].components) if same
                            else load(StableDiffusionXLImg2ImgPipeline, i2i_folder))
    for pipeline in pipelines.values():
        pipeline.to(device)
        pipeline.set_progress_bar_config(disable=True)
        pipeline.vae.enable_slicing()
        pipeline.vae.enable_tiling()
    return pipelines
