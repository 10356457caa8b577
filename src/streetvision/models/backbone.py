"""Backbone factory: any timm model name from config, with weights from a local file or cache only.

``model.init`` decides where weights come from:
- ``random``: random init (the demo's tiny ViT); must be asked for explicitly;
- ``file``: ``model.pretrained_file`` (safetensors, or a state dict read with ``weights_only=True``),
  passed through timm's own loader so its checkpoint filters apply (e.g. DINOv2's 518 px position
  embeddings resampled to ``model.img_size``);
- ``hf_cache``: the user's local Hugging Face / timm cache, offline. Nothing is ever downloaded at
  run time: a missing file fails at once with a message saying where to put the weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from streetvision.errors import StreetvisionError


class WeightsNotFoundError(StreetvisionError, FileNotFoundError):
    """Pretrained weights were requested but are not on this machine."""


class BackboneConfigError(StreetvisionError, ValueError):
    """timm cannot build the configured backbone; the message names the key."""


class UnknownBackboneError(BackboneConfigError):
    """``model.backbone`` names no timm model (or a pretrained tag timm does not have)."""


def unknown_backbone(name: str, err: Exception) -> UnknownBackboneError:
    import difflib

    close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=3)
    hint = f"; close names: {', '.join(close)}" if close else "; `timm.list_models('vit_*')` lists them"
    return UnknownBackboneError(f"config key 'model.backbone': {name!r} is not a timm model ({err}){hint}")


@dataclass(frozen=True)
class BackboneSpec:
    """Everything needed to rebuild the backbone architecture (saved with the weights)."""

    name: str
    img_size: int
    kwargs: dict

    @classmethod
    def from_config(cls, model_cfg: dict) -> BackboneSpec:
        return cls(model_cfg["backbone"], int(model_cfg["img_size"]),
                   dict(model_cfg.get("backbone_kwargs") or {}))

    def to_record(self) -> dict:
        return {"backbone": self.name, "img_size": self.img_size, "backbone_kwargs": self.kwargs}

    @classmethod
    def from_record(cls, record: dict) -> BackboneSpec:
        return cls(record["backbone"], int(record["img_size"]), dict(record.get("backbone_kwargs") or {}))

    def build(self) -> nn.Module:
        """The architecture alone (random init), to load saved weights into."""
        return _create(self, pretrained=False)

    def load(self, weights: str | os.PathLike) -> nn.Module:
        """The architecture with a saved state dict (safetensors only), loaded strictly."""
        from safetensors.torch import load_file

        backbone = self.build()
        try:
            backbone.load_state_dict(load_file(weights), strict=True)
        except RuntimeError as err:
            raise WeightsNotFoundError(f"{weights}: does not fit {self.name}: {err}") from err
        return backbone


def hub_id(name: str) -> str | None:
    """The Hugging Face repo timm loads ``name``'s pretrained weights from (``timm/<name>.<tag>``), if any."""
    cfg = timm.models.get_pretrained_cfg(name)
    return getattr(cfg, "hf_hub_id", None) if cfg is not None else None


def cached_weights(name: str) -> Path | None:
    """The backbone's weights in the local Hugging Face (or legacy torch hub) cache; never downloads."""
    from huggingface_hub import try_to_load_from_cache

    hf_home = os.environ.get("HF_HOME", os.path.join("~", ".cache", "huggingface"))
    cache_dir = os.path.expanduser(os.environ.get("HF_HUB_CACHE", os.path.join(hf_home, "hub")))
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return None
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        for filename in (getattr(cfg, "hf_hub_filename", None), "model.safetensors", "pytorch_model.bin"):
            if filename:
                found = try_to_load_from_cache(hub_id, filename, cache_dir=cache_dir)
                if isinstance(found, str):
                    return Path(found)
    url = getattr(cfg, "url", None)
    if url:
        legacy = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        if legacy.is_file():
            return legacy
    return None


def _create(spec: BackboneSpec, **extra) -> nn.Module:
    kwargs = {"num_classes": 0, "img_size": spec.img_size, **spec.kwargs, **extra}
    try:
        try:
            return timm.create_model(spec.name, **kwargs)
        except TypeError as err:  # convnets take no img_size: they adapt to any input size
            if "img_size" not in str(err) or "img_size" in spec.kwargs:
                raise
            kwargs.pop("img_size")
            return timm.create_model(spec.name, **kwargs)
    except TypeError as err:
        raise BackboneConfigError(f"config key 'model.backbone_kwargs': {spec.name} does not take "
                                  f"{sorted(spec.kwargs)} ({err})") from None
    except RuntimeError as err:
        if str(err).startswith(("Unknown model", "Invalid pretrained tag")):
            raise unknown_backbone(spec.name, err) from None
        raise


def pretrained_weights(model_cfg: dict) -> Path | None:
    """The local weights file ``model.init`` points at (None for random init); raises if it is missing.

    Called at config time (before any job runs) and again when the backbone is built.
    """
    init, name = model_cfg["init"], model_cfg["backbone"]
    if init == "random":
        return None
    if init == "file":
        weights = model_cfg.get("pretrained_file")
        if not weights:
            raise WeightsNotFoundError("config key 'model.pretrained_file' is required when model.init is "
                                       "'file'")
        if not Path(weights).is_file():
            raise WeightsNotFoundError(
                f"model.pretrained_file {weights} does not exist: put the {name} weights there "
                "(safetensors or a PyTorch state dict), or set model.init to 'hf_cache' to use your local "
                "Hugging Face cache"
            )
        return Path(weights).resolve()
    if init == "hf_cache":
        cached = cached_weights(name)
        if cached is None:
            raise WeightsNotFoundError(
                f"weights for {name} are not in the local Hugging Face cache "
                f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}) and nothing is downloaded at run "
                "time: "
                "fetch them once where there is network (e.g. timm.create_model(name, pretrained=True)), "
                "or set model.init: file and model.pretrained_file"
            )
        return cached
    raise ValueError(f"config key 'model.init': unknown value {init!r}")


def unit_layer_scales(backbone: nn.Module) -> None:
    """Set LayerScale factors to 1.

    DINOv2 initialises LayerScale at 1e-5, so a *randomly* initialised DINOv2 is almost the identity after
    its patch embedding: no block (nor a LoRA adapter on it) visibly changes its output. Pretrained weights
    carry learned scales; a random stand-in for tests should let every block act.
    """
    for module in backbone.modules():
        gamma = getattr(module, "gamma", None)
        if type(module).__name__ == "LayerScale" and isinstance(gamma, nn.Parameter):
            with torch.no_grad():
                gamma.fill_(1.0)


def build_backbone(model_cfg: dict) -> nn.Module:
    """Create the configured backbone with its weights (see module docstring)."""
    spec = BackboneSpec.from_config(model_cfg)
    weights = pretrained_weights(model_cfg)
    if weights is None:
        backbone = _create(spec, pretrained=False)
        unit_layer_scales(backbone)
        return backbone
    return _create(spec, pretrained=True, pretrained_cfg_overlay={"file": str(weights)})


def patch_size(backbone: nn.Module) -> int | None:
    """A ViT's (square) patch side; None for a model without a patch embedding (e.g. a convnet)."""
    size = getattr(getattr(backbone, "patch_embed", None), "patch_size", None)
    if size is None:
        return None
    return int(size[0]) if isinstance(size, tuple | list) else int(size)


def any_size_copy(backbone: nn.Module, model_cfg: dict) -> nn.Module:
    """The same backbone (its weights copied) taking inputs of any whole number of patches: timm's
    ``dynamic_img_size``, which interpolates the position embeddings; at ``model.img_size`` it computes
    exactly what ``backbone`` does, and its state dict loads into the plain architecture."""
    spec = BackboneSpec.from_config(model_cfg)
    try:
        copy = _create(spec, pretrained=False, dynamic_img_size=True)
    except BackboneConfigError as err:
        raise BackboneConfigError(f"{spec.name} takes only {spec.img_size} px inputs (no dynamic_img_size): "
                                  f"set explora.local_crop_size to model.img_size ({err})") from None
    copy.load_state_dict(backbone.state_dict(), strict=True)
    return copy


def backbone_blocks(backbone: nn.Module) -> list[nn.Module]:
    """The transformer blocks (or stages) in input-to-output order, for freezing and layer decay."""
    for attr in ("blocks", "stages", "layers"):
        blocks = getattr(backbone, attr, None)
        if isinstance(blocks, nn.Sequential | nn.ModuleList):
            return list(blocks)
    raise ValueError(f"{type(backbone).__name__}: cannot find its blocks ('blocks', 'stages' or 'layers')")


def lora_wrapped(backbone: nn.Module, blocks: list[int], targets: list[str], *, rank: int, alpha: float,
                 dropout: float = 0.0, use_dora: bool = False, use_rslora: bool = False):
    """``backbone`` with PEFT LoRA on the attention projections ``targets`` (timm's fused ``qkv``, ``proj``)
    of the given blocks; only the adapters train. DoRA and rsLoRA are PEFT's own flags. Merge it back with
    ``merge_and_unload()`` before saving: the bundle and the Hugging Face repo hold plain weights."""
    from peft import LoraConfig, get_peft_model

    pattern = rf"blocks\.({'|'.join(map(str, blocks))})\.attn\.({'|'.join(targets)})"
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, bias="none", use_dora=use_dora,
                        use_rslora=use_rslora, target_modules=pattern)
    return get_peft_model(backbone, config)


def merged(backbone: nn.Module) -> nn.Module:
    """A PEFT-wrapped backbone with its adapters merged into plain weights; any other backbone as it is."""
    return backbone.merge_and_unload() if hasattr(backbone, "merge_and_unload") else backbone


def apply_freezing(backbone: nn.Module, policy: str, trainable_blocks: int) -> None:
    """``full``: train everything; ``frozen``: train nothing; ``last_n``: the last N blocks + final norm."""
    if policy == "full":
        backbone.requires_grad_(True)
        return
    backbone.requires_grad_(False)
    if policy in ("frozen", "lora"):  # lora: the adapters (spec.build_trainable_classifier) train
        return
    if policy != "last_n":
        raise ValueError(f"config key 'model.freeze': unknown policy {policy!r}")
    for block in backbone_blocks(backbone)[-trainable_blocks:]:
        block.requires_grad_(True)
    for name in ("norm", "fc_norm", "head_drop"):
        module = getattr(backbone, name, None)
        if isinstance(module, nn.Module):
            module.requires_grad_(True)


def data_config(backbone: nn.Module, img_size: int, interpolation: str | None = None) -> dict:
    """Input normalisation and interpolation from the backbone's pretrained config (``interpolation``
    overrides the latter: ``model.interpolation``)."""
    cfg = timm.data.resolve_data_config({}, model=backbone)
    return {
        "img_size": img_size,
        "mean": [float(v) for v in cfg["mean"]],
        "std": [float(v) for v in cfg["std"]],
        "interpolation": interpolation or cfg.get("interpolation", "bicubic"),
    }


def count_parameters(module: nn.Module) -> dict[str, int]:
    return {
        "total": sum(p.numel() for p in module.parameters()),
        "trainable": sum(p.numel() for p in module.parameters() if p.requires_grad),
    }


__all__ = ["BackboneConfigError", "BackboneSpec", "UnknownBackboneError", "WeightsNotFoundError",
           "build_backbone", "pretrained_weights", "unit_layer_scales", "apply_freezing",
           "backbone_blocks", "data_config", "count_parameters"]
