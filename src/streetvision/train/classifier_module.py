"""The stage-1 classifier's LightningModule (phase 1's maths: loss, optimiser, schedule, validation MCC),
and batched prediction. Data live in datamodule.py, trainer wiring in trainer.py."""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import nn

from streetvision.metrics import compute_all_metrics
from streetvision.models.backbone import backbone_blocks
from streetvision.models.classifier import RoadworkClassifier

MONITOR = "val_select/mcc"


def layer_decay_groups(model: RoadworkClassifier, lr: float, weight_decay: float,
                       layer_decay: float | None) -> list[dict]:
    """AdamW parameter groups; with ``layer_decay`` block i of N gets lr·decay^(N−i), the stem decay^(N+1).

    Biases and norm weights (1-D tensors), and what the backbone's ``no_weight_decay()`` names (timm: the
    class token, position embeddings), get no weight decay.
    """
    try:
        blocks = backbone_blocks(model.backbone) if layer_decay else []
    except ValueError:
        blocks = []
    depth = {id(p): i + 1 for i, block in enumerate(blocks) for p in block.parameters()}
    # timm names the tokens and embeddings that must not be decayed (cls_token, pos_embed, ...).
    skip = getattr(model.backbone, "no_weight_decay", lambda: set())()
    no_decay = {f"backbone.{name}" for name in skip}
    n = len(blocks)
    groups: dict[tuple[float, float], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if layer_decay and blocks:
            if name.startswith("head"):
                scale = 1.0
            elif id(param) in depth:
                scale = layer_decay ** (n + 1 - depth[id(param)])
            elif (name.startswith("backbone.") and any(k in name for k in ("norm", "fc_norm"))
                  and "blocks" not in name):
                scale = 1.0
            else:
                scale = layer_decay ** (n + 1)
        else:
            scale = 1.0
        decay = 0.0 if param.ndim <= 1 or name in no_decay else weight_decay
        groups.setdefault((lr * scale, decay), []).append(param)
    return [{"params": params, "lr": group_lr, "weight_decay": decay} for (group_lr,
                                                                           decay), params in groups.items()]


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def smoothed(labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Binary label smoothing: targets 1 - s/2 and s/2 (training only; validation scores the true labels)."""
    return labels if not smoothing else labels * (1.0 - smoothing) + 0.5 * smoothing


class BaselineModule(L.LightningModule):
    """BCE on the classifier's logit; with a token head and ``aux_max_pool_weight`` > 0, plus that weight
    times the BCE of an auxiliary linear head on the max over patch tokens.

    The auxiliary head lives here, not in the classifier: it shapes the patch features during training
    (a class token learns "is there an object anywhere" slowly; a max over patches says it directly) and
    is dropped afterwards, so the exported model still reads the class token only.
    """

    def __init__(self, model: RoadworkClassifier, lr: float, weight_decay: float, warmup_fraction: float,
                 layer_decay: float | None = None, pos_weight: float | None = None,
                 aux_max_pool_weight: float = 0.0, label_smoothing: float = 0.0):
        super().__init__()
        self.model = model
        self.lr, self.weight_decay = lr, weight_decay
        self.warmup_fraction, self.layer_decay = warmup_fraction, layer_decay
        self.loss = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight) if pos_weight else None)
        self.label_smoothing = label_smoothing
        self.aux_weight = aux_max_pool_weight if model.pooling in ("token", "token_mean") else 0.0
        self.aux_head = nn.Linear(model.backbone.embed_dim, 1) if self.aux_weight > 0 else None
        self._val_logits: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def training_step(self, batch, batch_idx):
        images, labels, _ = batch
        labels = smoothed(labels, self.label_smoothing)
        if self.aux_head is None:
            loss = self.loss(self.model(images).float(), labels)
        else:
            tokens = self.model.backbone.forward_features(images)
            logits = self.model.head(self.model.pool_tokens(tokens)).squeeze(-1)
            aux = self.aux_head(self.model.patch_tokens(tokens).amax(dim=1)).squeeze(-1)
            loss = self.loss(logits.float(), labels) + self.aux_weight * self.loss(aux.float(), labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(labels))
        return loss

    def validation_step(self, batch, batch_idx):
        images, labels, _ = batch
        logits = self.model(images).float()
        self.log("val_select/loss", self.loss(logits, labels), on_epoch=True, sync_dist=True,
                 batch_size=len(labels))
        self._val_logits.append(logits.detach())
        self._val_labels.append(labels.detach())

    def on_validation_epoch_end(self):
        logits = torch.cat(self._val_logits)
        labels = torch.cat(self._val_labels)
        self._val_logits, self._val_labels = [], []
        if self.trainer.world_size > 1:  # every rank scores the whole split
            logits = self.all_gather(logits).reshape(-1)
            labels = self.all_gather(labels).reshape(-1)
        m = compute_all_metrics(labels.cpu(), torch.sigmoid(logits).cpu(), threshold=0.5)
        for key in ("mcc", "accuracy", "auroc"):
            value = m[key] if not math.isnan(m[key]) else 0.0
            self.log(f"val_select/{key}", value, prog_bar=key == "mcc", rank_zero_only=False)

    def configure_optimizers(self):
        groups = layer_decay_groups(self.model, self.lr, self.weight_decay, self.layer_decay)
        if self.aux_head is not None:
            groups.append({"params": list(self.aux_head.parameters()), "lr": self.lr, "weight_decay": 0.0})
        optimizer = torch.optim.AdamW(groups)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = int(self.warmup_fraction * total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                      lambda step: warmup_cosine(step, total, warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


@torch.inference_mode()
def predict_with_features(model: RoadworkClassifier, loader,
                          device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, pooled features) for every sample of the loader, in order."""
    model.eval().to(device)
    logits, features = [], []
    for images, _, _ in loader:
        batch_logits, batch_features = model.forward_with_features(images.to(device))
        logits.append(batch_logits.float().cpu())
        features.append(batch_features.float().cpu())
    return torch.cat(logits), torch.cat(features)
