"""Rewrite the stage-1 classifier as a native transformers image classifier, decision policy folded in.

Targets (no ``trust_remote_code``; what the stock NATIX miner's ``AutoModelForImageClassification`` loads):
- ``Dinov2ForImageClassification``: a timm class-token ViT with LayerScale (``vit_*_patch14_dinov2``) or
  any ``model.head: token_mean`` model; its classifier reads [CLS, mean of patch tokens] of the
  final-norm sequence (a ``token`` head becomes the same with zero weights on the mean half);
- ``ViTForImageClassification``: a timm class-token ViT without LayerScale and a ``token`` head
  (linear on the final-norm CLS).
Anything else (convnets, no class token, register tokens, SwiGLU MLPs, pooled/MLP heads that are not
a linear map of those tokens) is refused with an error naming ``model.backbone`` / ``model.head``.

Weights use the tensor names of transformers 4.45.2 (the miner's pin; newer releases map them).

Folding the policy: with head logit l = w·x + b, threshold t on sigmoid(l) and temperature T, the
exported classifier computes

    z = w'·x + b',   w' = w / T,   b' = (b - logit t) / T + m

so sigmoid(z) > 0.5 exactly when l > logit t - m T, and sigmoid(z) is the temperature-calibrated
probability sigmoid(l / T) when t = 0.5 (otherwise: the calibrated odds divided by those of t; an
affine map of l cannot be both calibrated and centred on t).

Ties and precision. The bundle decides p >= t in float64 on the float32 logit; transformers computes
z in float32 and the pipeline applies a float32 sigmoid, and validators round 0.5 down. The MCC sweep
puts t exactly on one calibration image's probability, so that image has l == logit t. The tie margin
m (``TIE_MARGIN`` = 1e-5, in z units) sends it to sigmoid(m) = 0.5 + 2.5e-6 (positive, as in the
bundle; float32 resolves 6e-8 there) even though timm's and transformers' float32 forward passes
disagree by up to ~2e-6 in logit on a trained DINOv2-S. The price: an image with l in
[logit t - m T, logit t) is positive here and negative in the bundle, a band of 1e-5 T in logit
(about 2.5e-6 T in probability) that no measured image fell into. An exact 0.5 needs |z| < ~3e-8,
i.e. l about m T below logit t: a negative decision in both (0.5 rounds to 0). The classifier
parameters are folded in float64 and stored as float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from streetvision.errors import StreetvisionError
from streetvision.models.classifier import (
    RoadworkClassifier,
    has_layer_scale,
    resolve_head,
    token_sequence_problem,
)

LABEL = "Roadwork"
TIE_MARGIN = 1e-5
DINOV2 = "Dinov2ForImageClassification"
VIT = "ViTForImageClassification"


class HFExportError(StreetvisionError, ValueError):
    """The model cannot be written as a native transformers classifier; the message names the key."""


@dataclass(frozen=True)
class HFTarget:
    architecture: str  # transformers class, e.g. Dinov2ForImageClassification
    model_type: str  # config.json model_type
    head: str  # the resolved model.head


def _block_problem(block: nn.Module, eps: float) -> str | None:
    """Why a timm block is not a plain pre-norm ViT block transformers can rebuild (None if it is)."""
    from timm.models.vision_transformer import Block

    if type(block) is not Block:
        return f"blocks of type {type(block).__name__} (only timm's plain vision_transformer.Block)"
    attn, mlp = block.attn, block.mlp
    extras = [getattr(attn, "q_norm", None), getattr(attn, "k_norm", None), getattr(attn, "norm", None),
              getattr(mlp, "norm", None)]
    if any(m is not None and not isinstance(m, nn.Identity) for m in extras):
        return "qk-norm or inner attention/MLP norms"
    if not isinstance(getattr(attn, "qkv", None), nn.Linear) or attn.proj.bias is None:
        return "attention without a fused qkv projection or without an output bias"
    if attn.head_dim * attn.num_heads != attn.qkv.in_features:
        return "an attention head width other than embed_dim / num_heads"
    if type(mlp).__name__ != "Mlp" or not isinstance(mlp.act, nn.GELU) or mlp.act.approximate != "none":
        return f"a {type(mlp).__name__} MLP with {getattr(mlp, 'act', None)} (only Mlp with exact GELU)"
    if mlp.fc1.bias is None or mlp.fc2.bias is None:
        return "MLP layers without bias"
    norms = (block.norm1, block.norm2)
    if not all(isinstance(n, nn.LayerNorm) and n.elementwise_affine and n.eps == eps for n in norms):
        return "block norms that are not affine LayerNorms with the final norm's eps"
    if type(block.ls1).__name__ != type(block.ls2).__name__:
        return "LayerScale on one residual branch only"
    return None


def _backbone_problem(backbone: nn.Module) -> str | None:
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(backbone, VisionTransformer):
        return f"{type(backbone).__name__} is not a timm VisionTransformer"
    problem = token_sequence_problem(backbone)
    if problem:
        return problem
    if backbone.num_prefix_tokens != 1:
        return "register tokens (Dinov2WithRegisters is not in transformers 4.45.2, the miner's pin)"
    if backbone.no_embed_class or backbone.pos_embed is None or not isinstance(backbone.norm_pre,
                                                                               nn.Identity):
        return "position embeddings without the class position, or a pre-norm (CLIP style)"
    embed = backbone.patch_embed
    if (not isinstance(embed.norm,
                       nn.Identity) or embed.proj.bias is None or embed.proj.kernel_size != embed.proj.stride
            or embed.proj.kernel_size[0] != embed.proj.kernel_size[1]
            or embed.img_size[0] != embed.img_size[1]):
        return "a patch embedding other than a biased square conv on a square image"
    eps = backbone.norm.eps
    for block in backbone.blocks:
        problem = _block_problem(block, eps)
        if problem:
            return problem
    qkv_bias = {block.attn.qkv.bias is not None for block in backbone.blocks}
    if len(qkv_bias) != 1:
        return "qkv bias in some blocks only"
    return None


def _target(backbone: nn.Module, head: str, linear: bool, backbone_name: str) -> HFTarget:
    problem = _backbone_problem(backbone)
    if problem:
        raise HFExportError(f"config key 'model.backbone' ({backbone_name}): cannot export to transformers: "
                            f"{problem}")
    if not linear:
        raise HFExportError("config key 'model.head_hidden': an MLP head has no transformers equivalent; set "
                            "it to 0")
    if head == "pooled":
        if backbone.global_pool != "token" or not isinstance(backbone.fc_norm, nn.Identity):
            raise HFExportError(
                f"config key 'model.head': 'pooled' with global_pool {backbone.global_pool!r} has no "
                "transformers "
                "equivalent; use model.head: auto (token_mean for DINOv2, token for a class-token ViT)")
        head = "token"  # the backbone's own pooling is then exactly the final-norm CLS
    if head == "token_mean" or has_layer_scale(backbone):
        return HFTarget(DINOV2, "dinov2", head)
    return HFTarget(VIT, "vit", head)


def hf_target_for_config(model_cfg: dict) -> HFTarget:
    """Config-time check: the transformers class ``model`` exports to, or ``ConfigError`` naming the key.

    Builds the architecture on the meta device (no weights, no memory, well under a second).
    """
    from streetvision.config import ConfigError
    from streetvision.models.backbone import BackboneSpec

    spec = BackboneSpec.from_config(model_cfg)
    try:
        with torch.device("meta"):
            backbone = spec.build()
        head = resolve_head(backbone, model_cfg.get("head", "auto"))
        return _target(backbone, head, int(model_cfg.get("head_hidden", 0)) <= 0, spec.name)
    except (HFExportError, ValueError) as err:
        raise ConfigError(f"hf_export.enabled: {err}") from err
    except RuntimeError as err:  # timm could not build it at all
        raise ConfigError(f"config key 'model.backbone' ({spec.name}): {err}") from err


def hf_target(model: RoadworkClassifier, backbone_name: str = "backbone") -> HFTarget:
    """The transformers class a built classifier exports to (``HFExportError`` if none)."""
    linear = len(model.head) == 2 and isinstance(model.head[1], nn.Linear)
    return _target(model.backbone, model.pooling, linear, backbone_name)


def fold_policy(weight: torch.Tensor, bias: torch.Tensor, threshold: float, temperature: float,
                margin: float = TIE_MARGIN) -> tuple[torch.Tensor, torch.Tensor]:
    """(w / T, (b - logit t) / T + m) in float64 arithmetic, returned as float32 (module docstring)."""
    if not 0.0 < threshold < 1.0 or not math.isfinite(threshold):
        raise HFExportError(f"policy threshold {threshold!r}: must lie strictly between 0 and 1 to be folded")
    if not temperature > 0.0 or not math.isfinite(temperature):
        raise HFExportError(f"policy temperature {temperature!r}: must be a positive number")
    logit_t = math.log(threshold) - math.log1p(-threshold)
    w = weight.detach().double() / temperature
    b = (bias.detach().double() - logit_t) / temperature + margin
    return w.float(), b.float()


def _config(target: HFTarget, backbone: nn.Module) -> dict:
    width = backbone.embed_dim
    first = backbone.blocks[0]
    hidden = first.mlp.fc1.out_features
    common = {
        "architectures": [target.architecture], "model_type": target.model_type,
        "hidden_size": width, "num_hidden_layers": len(backbone.blocks),
        "num_attention_heads": first.attn.num_heads,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02, "layer_norm_eps": backbone.norm.eps,
        "image_size": backbone.patch_embed.img_size[0], "patch_size": backbone.patch_embed.patch_size[0],
        "num_channels": backbone.patch_embed.proj.in_channels, "qkv_bias": first.attn.qkv.bias is not None,
        # one label + sigmoid (multi-label: both 4.45.2 and 5.x apply a sigmoid; 'regression' would not)
        "id2label": {"0": LABEL}, "label2id": {LABEL: 0}, "problem_type": "multi_label_classification",
        "torch_dtype": "float32",
    }
    if target.model_type == "vit":
        return {**common, "intermediate_size": hidden, "encoder_stride": common["patch_size"]}
    if hidden % width:  # transformers 5 types Dinov2Config.mlp_ratio as an int
        raise HFExportError(f"config key 'model.backbone': MLP width {hidden} is not a multiple of {width}")
    return {**common, "mlp_ratio": hidden // width, "layerscale_value": 1.0, "drop_path_rate": 0.0,
            "use_swiglu_ffn": False}


def _block_tensors(prefix: str, block: nn.Module, dinov2: bool) -> dict[str, torch.Tensor]:
    out = {}
    qkv_w = block.attn.qkv.weight.chunk(3, dim=0)
    qkv_b = block.attn.qkv.bias.chunk(3, dim=0) if block.attn.qkv.bias is not None else (None,) * 3
    for name, w, b in zip(("query", "key", "value"), qkv_w, qkv_b, strict=True):
        out[f"{prefix}.attention.attention.{name}.weight"] = w
        if b is not None:
            out[f"{prefix}.attention.attention.{name}.bias"] = b
    linears = {"attention.output.dense": block.attn.proj}
    if dinov2:
        norms = {"norm1": block.norm1, "norm2": block.norm2}
        linears.update({"mlp.fc1": block.mlp.fc1, "mlp.fc2": block.mlp.fc2})
        width = block.norm1.weight.shape[0]
        for i, scale in ((1, block.ls1), (2, block.ls2)):  # a plain ViT block is LayerScale 1
            out[f"{prefix}.layer_scale{i}.lambda1"] = scale.gamma if hasattr(scale,
                                                                             "gamma") else torch.ones(width)
    else:
        norms = {"layernorm_before": block.norm1, "layernorm_after": block.norm2}
        linears.update({"intermediate.dense": block.mlp.fc1, "output.dense": block.mlp.fc2})
    for name, module in {**norms, **linears}.items():
        out[f"{prefix}.{name}.weight"] = module.weight
        out[f"{prefix}.{name}.bias"] = module.bias
    return out


def to_transformers(model: RoadworkClassifier, threshold: float, temperature: float,
                    margin: float = TIE_MARGIN,
                    backbone_name: str = "backbone") -> tuple[HFTarget, dict, dict[str, torch.Tensor]]:
    """(target, config.json dict, state dict with transformers 4.45.2 names), policy folded in."""
    target = hf_target(model, backbone_name)
    backbone = model.backbone
    dinov2 = target.model_type == "dinov2"
    root = target.model_type  # "dinov2." / "vit." prefix of the base model
    state = {
        f"{root}.embeddings.cls_token": backbone.cls_token,
        f"{root}.embeddings.position_embeddings": backbone.pos_embed,
        f"{root}.embeddings.patch_embeddings.projection.weight": backbone.patch_embed.proj.weight,
        f"{root}.embeddings.patch_embeddings.projection.bias": backbone.patch_embed.proj.bias,
        f"{root}.layernorm.weight": backbone.norm.weight,
        f"{root}.layernorm.bias": backbone.norm.bias,
    }
    if dinov2:  # used only for masked image modelling; present in every Dinov2 checkpoint
        state[f"{root}.embeddings.mask_token"] = torch.zeros(1, backbone.embed_dim)
    for i, block in enumerate(backbone.blocks):
        state.update(_block_tensors(f"{root}.encoder.layer.{i}", block, dinov2))
    linear = model.head[1]
    weight = linear.weight
    if dinov2 and target.head == "token":  # Dinov2 reads [CLS, mean]: give the mean half no weight
        weight = torch.cat([weight, torch.zeros_like(weight)], dim=1)
    state["classifier.weight"], state["classifier.bias"] = fold_policy(weight, linear.bias, threshold,
                                                                       temperature, margin)
    state = {k: v.detach().float().contiguous().clone() for k, v in state.items()}
    return target, _config(target, backbone), state


__all__ = ["DINOV2", "LABEL", "TIE_MARGIN", "VIT", "HFExportError", "HFTarget", "fold_policy", "hf_target",
           "hf_target_for_config", "to_transformers"]
