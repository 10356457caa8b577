"""One way to rebuild the classifier from its record (in the spirit of timm's ``pretrained_cfg``).

Phase 1 saves ``ClassifierSpec.to_record()`` beside the weights (``model_config.json``); phase 4, the
bundle loader, the Hugging Face export, tests and benchmarks rebuild from it with ``from_record`` and
``build``/``load``. The record holds the architecture (backbone name, input size, timm overrides, head)
and the input preprocessing (mean, std, interpolation) the weights were trained with.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from streetvision.models.backbone import BackboneSpec, WeightsNotFoundError
from streetvision.models.classifier import RoadworkClassifier


@dataclass(frozen=True)
class ClassifierSpec:
    backbone: BackboneSpec
    head_hidden: int = 0
    head_dropout: float = 0.0
    data: dict = field(default_factory=dict)  # img_size, mean, std, interpolation
    head: str = "pooled"  # what the head reads (models/classifier.py); records hold the resolved one

    @classmethod
    def from_config(cls, model_cfg: dict, data: dict | None = None) -> ClassifierSpec:
        return cls(BackboneSpec.from_config(model_cfg), model_cfg["head_hidden"], model_cfg["head_dropout"],
                   dict(data or {}), model_cfg.get("head", "auto"))

    def to_record(self) -> dict:
        return {**self.backbone.to_record(), "head": self.head, "head_hidden": self.head_hidden,
                "head_dropout": self.head_dropout, "data": self.data}

    @classmethod
    def from_record(cls, record: dict) -> ClassifierSpec:
        return cls(BackboneSpec.from_record(record), int(record["head_hidden"]),
                   float(record["head_dropout"]),
                   dict(record.get("data") or {}), record.get("head", "pooled"))

    def build(self, backbone=None) -> RoadworkClassifier:
        """The classifier around ``backbone`` (default: the architecture with random weights)."""
        return RoadworkClassifier(backbone if backbone is not None else self.backbone.build(),
                                  self.head_hidden, self.head_dropout, self.head)

    def load(self, weights: str | os.PathLike) -> RoadworkClassifier:
        """The classifier with phase 1's saved weights (safetensors only, loaded strictly), in eval mode."""
        from safetensors.torch import load_file

        model = self.build()
        try:
            model.load_state_dict(load_file(weights), strict=True)
        except RuntimeError as err:
            raise WeightsNotFoundError(f"{weights}: does not fit {self.backbone.name}: {err}") from err
        return model.eval()

    def eval_transform(self):
        """The deterministic preprocessing the weights expect (PIL image -> normalised tensor)."""
        from streetvision.data.transforms import eval_transform

        return eval_transform(self.data["img_size"], self.data["mean"], self.data["std"],
                              self.data["interpolation"])


def build_trainable_classifier(model_cfg: dict, adapted_backbone: str | os.PathLike | None = None
                               ) -> tuple[RoadworkClassifier, ClassifierSpec]:
    """Phase 1's starting point: the configured backbone (pretrained weights, or phase 4's adapted backbone
    in their place), frozen as configured, plus a fresh head; and the spec to save beside its weights."""
    from streetvision.models.backbone import (
        apply_freezing,
        backbone_blocks,
        build_backbone,
        data_config,
        lora_wrapped,
    )

    backbone_spec = BackboneSpec.from_config(model_cfg)
    backbone = build_backbone(model_cfg) if adapted_backbone is None else backbone_spec.load(adapted_backbone)
    apply_freezing(backbone, model_cfg["freeze"], model_cfg["trainable_blocks"])
    spec = ClassifierSpec.from_config(model_cfg, data_config(backbone, model_cfg["img_size"],
                                                             model_cfg.get("interpolation")))
    if model_cfg["freeze"] == "lora":  # adapters on every block; the head (built below) trains in full
        lora = model_cfg["lora"]
        backbone = lora_wrapped(backbone, list(range(len(backbone_blocks(backbone)))), lora["targets"],
                                rank=lora["rank"], alpha=lora["alpha"], dropout=lora["dropout"],
                                use_dora=lora["use_dora"], use_rslora=lora["use_rslora"])
    model = spec.build(backbone)
    return model, replace(spec, head=model.pooling)  # "auto" resolved, so a loader rebuilds the same head
