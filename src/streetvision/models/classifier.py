"""The stage-1 classifier: a timm backbone, pooled features, and a one-logit head."""

from __future__ import annotations

import torch
from torch import nn


def build_head(in_features: int, hidden: int, dropout: float) -> nn.Module:
    """Linear head (hidden = 0) or a one-hidden-layer MLP."""
    if hidden <= 0:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, 1))
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, 1))


class RoadworkClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, head_hidden: int = 0, head_dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.head = build_head(backbone.num_features, head_hidden, head_dropout)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (what the gate of phase 3 consumes)."""
        return self.backbone(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """One logit per image; sigmoid(logit) = P(roadwork)."""
        return self.head(self.features(images)).squeeze(-1)

    def forward_with_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(images)
        return self.head(features).squeeze(-1), features
