"""The stage-1 classifier: a timm backbone, its features, and a one-logit head.

``model.head`` chooses what the head reads:
- ``pooled``: the backbone's own pooling (timm ``global_pool``, incl. ``fc_norm``), as before;
- ``token``: the class token of the final-norm token sequence (what transformers'
  ``ViTForImageClassification`` classifies);
- ``token_mean``: [class token, mean of the patch tokens] of that sequence (what
  ``Dinov2ForImageClassification`` classifies);
- ``auto``: ``token_mean`` for a class-token ViT with LayerScale (the DINOv2 family), ``token`` for a
  plain class-token ViT, ``pooled`` for anything else (convnets, ViTs without a class token or without
  a final norm over the tokens).
``head_hidden`` > 0 puts a one-hidden-layer MLP on top of any of them (not exportable to transformers).
"""

from __future__ import annotations

import torch
from torch import nn

HEADS = ("auto", "token", "token_mean", "pooled")


def build_head(in_features: int, hidden: int, dropout: float) -> nn.Module:
    """Linear head (hidden = 0) or a one-hidden-layer MLP."""
    if hidden <= 0:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, 1))
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, 1))


def token_sequence_problem(backbone: nn.Module) -> str | None:
    """Why the backbone cannot feed a token head (None when it can).

    A token head needs ``forward_features`` to return the final-norm sequence with the class token
    first: a timm ViT with a class token whose final ``norm`` is a LayerNorm (with
    ``global_pool: avg``/``max`` timm moves that norm after the pooling, as ``fc_norm``).
    """
    if getattr(backbone, "cls_token", None) is None or not hasattr(backbone, "forward_features"):
        return (f"{type(backbone).__name__} has no class token (a timm ViT needs "
                "model.backbone_kwargs.class_token: true)")
    if not isinstance(getattr(backbone, "norm", None), nn.LayerNorm):
        return ("its final norm is applied after pooling (fc_norm), not to the token sequence: "
                "set model.backbone_kwargs.global_pool: token")
    return None


def has_layer_scale(backbone: nn.Module) -> bool:
    """True for ViTs whose blocks scale their residual branches (LayerScale), e.g. the DINOv2 family."""
    blocks = getattr(backbone, "blocks", None)
    return bool(blocks) and any(type(getattr(b, "ls1", None)).__name__ == "LayerScale" for b in blocks)


def resolve_head(backbone: nn.Module, head: str) -> str:
    """The concrete head (``token``, ``token_mean`` or ``pooled``) for ``model.head``; errors name the key."""
    if head not in HEADS:
        raise ValueError(f"config key 'model.head': unknown value {head!r} (choose from {', '.join(HEADS)})")
    problem = token_sequence_problem(backbone)
    if head == "auto":
        if problem is not None:
            return "pooled"
        return "token_mean" if has_layer_scale(backbone) else "token"
    if head != "pooled" and problem is not None:
        raise ValueError(f"config key 'model.head': {head!r} needs a token sequence, but {problem}")
    return head


class RoadworkClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, head_hidden: int = 0, head_dropout: float = 0.0,
                 head: str = "pooled"):
        super().__init__()
        self.backbone = backbone
        self.pooling = resolve_head(backbone, head)  # saved in model_config.json as "head"
        width = backbone.num_features if self.pooling == "pooled" else backbone.embed_dim
        self.feature_dim = 2 * width if self.pooling == "token_mean" else width
        self.head = build_head(self.feature_dim, head_hidden, head_dropout)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """What the head reads (and what the gate of phase 3 consumes)."""
        if self.pooling == "pooled":
            return self.backbone(images)
        return self.pool_tokens(self.backbone.forward_features(images))

    def pool_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """A token head's input from the final-norm token sequence (class token first)."""
        if self.pooling == "token":
            return tokens[:, 0]
        return torch.cat([tokens[:, 0], self.patch_tokens(tokens).mean(dim=1)], dim=-1)

    def patch_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, self.backbone.num_prefix_tokens:]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """One logit per image; sigmoid(logit) = P(roadwork)."""
        return self.head(self.features(images)).squeeze(-1)

    def forward_with_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(images)
        return self.head(features).squeeze(-1), features
