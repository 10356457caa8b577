"""Phase 4 ExPLoRA (Khanna et al., ICML 2025): parameter-efficient extended self-supervised pre-training.

The pretrained ViT keeps training with its own self-supervised objective on target-domain images:
LoRA adapters (PEFT) on the attention projections of every block but the last ``unfreeze_blocks``,
which are trained in full. The objective here is DINO self-distillation: a student and an EMA teacher
with the same adapted architecture, a projection head with prototypes, 2 global + N local crops,
teacher centering and sharpening (temperatures), and a cosine EMA-momentum schedule.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from streetvision.data.datasets import ImageDataset, as_given, image_batches
from streetvision.data.transforms import eval_transform
from streetvision.errors import StreetvisionError
from streetvision.metrics import compute_mcc
from streetvision.models.backbone import BackboneSpec, backbone_blocks, lora_wrapped
from streetvision.train.classifier_module import warmup_cosine

ALLOWED_SPLITS = ("train", "unlabeled")
# Part of the run key: bumped when a step trains differently under the same config, so that checkpoints
# of the old way are discarded, not resumed (2: local crops at DINO's ratio by default, batched passes).
TRAINING_REVISION = 2
VALIDATION_BATCH = 16


class LeakageError(StreetvisionError, ValueError):
    """ExPLoRA was asked to read an evaluation split."""


class ExportValidationError(StreetvisionError, RuntimeError):
    """The saved backbone does not reproduce the adapted model's embeddings (or cannot be checked)."""


# ---------------------------------------------------------------- settings (from the ``explora`` config
# section)

@dataclass(frozen=True)
class LoraSettings:
    """Which parts of the backbone ExPLoRA trains."""

    unfreeze_blocks: int  # the last N blocks, trained in full
    target_modules: list  # attention projections that get LoRA (timm's fused qkv)
    lora_rank: int
    lora_alpha: float
    lora_dropout: float
    train_norms: bool  # every LayerNorm too
    use_dora: bool  # PEFT's weight-decomposed LoRA
    use_rslora: bool  # PEFT's rank-stabilised scaling (alpha / sqrt(r))


@dataclass(frozen=True)
class DinoSettings:
    """DINO self-distillation: the head, the temperatures, the EMA teacher and the optimiser."""

    out_dim: int
    head_hidden: int
    head_bottleneck: int
    student_temp: float
    teacher_temp: float
    center_momentum: float
    ema_momentum: float  # at the start; cosine to 1
    lr: float
    weight_decay: float
    warmup_fraction: float


# ---------------------------------------------------------------- adapters

def add_lora(backbone: nn.Module, lora: LoraSettings):
    """Wrap ``backbone`` with PEFT LoRA on all blocks but the last N, then unfreeze those N blocks."""
    blocks = backbone_blocks(backbone)
    n_unfrozen = lora.unfreeze_blocks
    adapted = list(range(len(blocks) - n_unfrozen))
    if not adapted:
        raise ValueError(f"config key 'explora.unfreeze_blocks': {n_unfrozen} leaves no block for LoRA "
                         f"(the backbone has {len(blocks)})")
    model = lora_wrapped(backbone, adapted, lora.target_modules, rank=lora.lora_rank, alpha=lora.lora_alpha,
                         dropout=lora.lora_dropout, use_dora=lora.use_dora, use_rslora=lora.use_rslora)
    for block in backbone_blocks(model.base_model.model)[len(adapted):]:
        block.requires_grad_(True)
    if lora.train_norms:
        for name, param in model.named_parameters():
            if "norm" in name:
                param.requires_grad_(True)
    return model


# ---------------------------------------------------------------- DINO objective

class DINOHead(nn.Module):
    """MLP projection, L2-normalised bottleneck, weight-normalised prototypes (as in DINO)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int, bottleneck: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.prototypes = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
        self.prototypes.parametrizations.weight.original0.data.fill_(1.0)
        self.prototypes.parametrizations.weight.original0.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prototypes(F.normalize(self.mlp(x), dim=-1))


class DINOLoss(nn.Module):
    """Cross-entropy between sharpened, centred teacher outputs and student outputs of other views."""

    def __init__(self, out_dim: int, student_temp: float, teacher_temp: float, center_momentum: float):
        super().__init__()
        self.student_temp, self.teacher_temp = student_temp, teacher_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_out: list[torch.Tensor], teacher_out: list[torch.Tensor]) -> torch.Tensor:
        teacher_probs = [F.softmax((t - self.center) / self.teacher_temp,
                                   dim=-1).detach() for t in teacher_out]
        student_logp = [F.log_softmax(s / self.student_temp, dim=-1) for s in student_out]
        total, pairs = 0.0, 0
        for ti, t in enumerate(teacher_probs):
            for si, s in enumerate(student_logp):
                if si == ti:  # same view: skipped, as in DINO
                    continue
                total = total + torch.sum(-t * s, dim=-1).mean()
                pairs += 1
        self.update_center(torch.cat(teacher_out))
        return total / pairs

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        batch_center = teacher_out.sum(dim=0, keepdim=True)
        count = torch.tensor([teacher_out.shape[0]], device=teacher_out.device, dtype=batch_center.dtype)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_center)
            dist.all_reduce(count)
        self.center.mul_(self.center_momentum).add_(batch_center / count * (1 - self.center_momentum))


def ema_momentum(step: int, total: int, base: float) -> float:
    """Cosine schedule from ``base`` to 1 over training."""
    return 1.0 - (1.0 - base) * (math.cos(math.pi * min(step, total) / max(1, total)) + 1) / 2


# ---------------------------------------------------------------- data

def explora_views(crops: MultiCrop, challenge_views: bool, seed: int | None = None):
    """What DINO crops, per indexed image: a fresh validator challenge of it (``explora.challenge_views``:
    self-supervision then adapts the backbone to what miners are actually sent, rendered as training
    renders it, from the training store), or the image as a validator holds it (its cached copy)."""
    from streetvision.data.challenge import LEVEL_PROBS
    from streetvision.data.views import CleanView, TrainingChallenge

    if challenge_views:
        return TrainingChallenge(crops, list(LEVEL_PROBS.values()), seed=seed)
    return CleanView(crops)


class MultiCrop:
    """2 global crops at the input size and N local crops (small regions), DINO-style photometric jitter."""

    def __init__(self, img_size: int, local_size: int, n_local: int, global_scale, local_scale, mean, std):
        tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
        jitter = [v2.RandomHorizontalFlip(), v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
                  v2.RandomGrayscale(p=0.2)]
        self.global_view = v2.Compose([v2.RandomResizedCrop(img_size, scale=tuple(global_scale),
                                                            antialias=True),
                                       *jitter, v2.RandomApply([v2.GaussianBlur(5)], p=0.5), *tail])
        self.local_view = v2.Compose([v2.RandomResizedCrop(local_size, scale=tuple(local_scale),
                                                           antialias=True),
                                      *jitter, *tail])
        self.n_local = n_local

    def __call__(self, image) -> list[torch.Tensor]:  # a PIL image or a uint8 tv_tensors.Image
        return [self.global_view(image),
                self.global_view(image)] + [self.local_view(image) for _ in range(self.n_local)]


DINO_LOCAL_RATIO = 96 / 224  # DINO's local crop side over its global one (DINOv2: 98 at patch 14)


def local_crop_side(configured: int | None, img_size: int, patch: int | None) -> int:
    """``explora.local_crop_size``, or by default DINO's ratio of ``img_size`` in whole patches."""
    if configured is None:
        if patch is None:
            return round(img_size * DINO_LOCAL_RATIO)
        return max(1, round(img_size * DINO_LOCAL_RATIO / patch)) * patch
    if patch and configured % patch:
        from streetvision.config import ConfigError

        raise ConfigError(f"config key 'explora.local_crop_size': {configured} px is not a whole number of "
                          f"the backbone's {patch} px patches")
    return configured


def explora_frame(index: pd.DataFrame, splits: list[str]) -> pd.DataFrame:
    """The rows ExPLoRA may read; any evaluation split is refused by name."""
    refused = [s for s in splits if s not in ALLOWED_SPLITS]
    if refused:
        raise LeakageError(f"ExPLoRA may read only {ALLOWED_SPLITS}; refused split(s) {refused}")
    frame = index[index["split"].isin(splits)].reset_index(drop=True)
    if frame.empty:
        raise ValueError(f"ExPLoRA: no images in split(s) {splits}")
    return frame


def explora_loader(index: pd.DataFrame, splits: list[str], views, batch_size: int, num_workers: int, *,
                   prefetch_factor: int = 2, pin_memory: bool = False) -> DataLoader:
    """Batches of ``views`` (``explora_views``) of the allowed splits' images."""
    from streetvision.data.views import samples_of

    frame = explora_frame(index, splits)
    dataset = ImageDataset(samples_of(frame), views, opener=as_given)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True,
                      num_workers=num_workers, persistent_workers=num_workers > 0,
                      prefetch_factor=prefetch_factor if num_workers else None, pin_memory=pin_memory,
                      drop_last=len(frame) > batch_size)


# ---------------------------------------------------------------- Lightning module

class ExploraModule(L.LightningModule):
    def __init__(self, student_backbone: nn.Module, dino: DinoSettings):
        super().__init__()
        embed_dim = student_backbone.base_model.model.num_features
        self.dino = dino
        self.student = student_backbone
        self.student_head = DINOHead(embed_dim, dino.out_dim, dino.head_hidden, dino.head_bottleneck)
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.teacher_head = copy.deepcopy(self.student_head).requires_grad_(False)
        self.loss = DINOLoss(dino.out_dim, dino.student_temp, dino.teacher_temp, dino.center_momentum)

    def training_step(self, crops, batch_idx):
        with torch.no_grad():
            teacher_out = self.views_through(self.teacher, self.teacher_head, crops[:2])
        student_out = (self.views_through(self.student, self.student_head, crops[:2])
                       + self.views_through(self.student, self.student_head, crops[2:]))
        loss = self.loss([s.float() for s in student_out], [t.float() for t in teacher_out])
        self.log("explora/loss", loss, on_step=True, on_epoch=True, prog_bar=True,
                 batch_size=crops[0].shape[0])
        return loss

    @staticmethod
    def views_through(backbone: nn.Module, head: nn.Module, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """Views of one size (the globals, or the locals) in one forward pass, split back per view: one
        large batch keeps a GPU busier than a pass per view, and a ViT's LayerNorms make it the same maths."""
        if not views:
            return []
        return list(head(backbone(torch.cat(views))).chunk(len(views)))

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx):
        m = ema_momentum(self.global_step, int(self.trainer.estimated_stepping_batches),
                         self.dino.ema_momentum)
        for student, teacher in ((self.student, self.teacher), (self.student_head, self.teacher_head)):
            for s, t in zip(student.parameters(), teacher.parameters(), strict=True):
                if s.requires_grad:
                    t.mul_(m).add_(s.detach(), alpha=1 - m)
        self.log("explora/ema_momentum", m, on_step=True)

    def configure_optimizers(self):
        params = [p for p in [*self.student.parameters(), *self.student_head.parameters()] if p.requires_grad]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": self.dino.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=self.dino.lr)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = int(self.dino.warmup_fraction * total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                      lambda step: warmup_cosine(step, total, warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


# ---------------------------------------------------------------- export checks and the probe

def fixed_batch(frame: pd.DataFrame, spec: dict, size: int = VALIDATION_BATCH) -> torch.Tensor:
    """A deterministic batch from ExPLoRA's own (train/unlabeled) images for the load-back check."""
    transform = eval_transform(spec["img_size"], spec["mean"], spec["std"], spec["interpolation"])
    return next(image_batches(frame.sort_values("id")["path"].head(size).tolist(), transform, size))


@torch.inference_mode()
def embed(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model.eval()(images).float()


def validate_export(reference: nn.Module, path, spec: BackboneSpec, batch: torch.Tensor,
                    tolerance: float) -> float:
    """Rebuild the backbone from its spec, load ``path`` strictly, compare embeddings; raise if they
    differ."""
    try:
        fresh = spec.load(path)
    except StreetvisionError as err:
        raise ExportValidationError(f"{path}: does not load into {spec.name}: {err}") from err
    difference = (embed(fresh, batch) - embed(reference, batch)).abs().max().item()
    if not difference <= tolerance:
        raise ExportValidationError(
            f"{path}: reloaded backbone differs from the adapted model by max |Δ| = {difference:.3g} "
            f"(tolerance {tolerance:g}); the export is incomplete or wrong")
    return difference


def check_adaptation_visible(adaptation: float, tolerance: float) -> None:
    """An export that silently dropped the adapter would pass the load-back check too, unless the adapter
    moved the embeddings by clearly more than the check's tolerance."""
    if not adaptation > 10 * tolerance:
        raise ExportValidationError(
            f"ExPLoRA changed the backbone's embeddings by only max |Δ| = {adaptation:.3g} (≤ 10 × "
            f"explora.export_tolerance {tolerance:g}): the load-back check cannot tell a good export from "
            "one without the adapter. Train longer, raise explora.lr, or lower the tolerance.")


def linear_probe(backbone: nn.Module, index: pd.DataFrame, spec: dict, max_train: int, seed: int) -> float:
    """Logistic regression on frozen features: fit on train, MCC on val_test. Fits nothing on val_test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    transform = eval_transform(spec["img_size"], spec["mean"], spec["std"], spec["interpolation"])

    def features(frame: pd.DataFrame) -> np.ndarray:
        return np.concatenate([embed(backbone,
                                     batch).numpy() for batch in image_batches(frame["path"].tolist(),
                                                                               transform)])

    train = index[index["split"] == "train"].sample(frac=1.0, random_state=seed).head(max_train)
    test = index[index["split"] == "val_test"]
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(features(train), train["label"].astype(int))
    return compute_mcc(test["label"].astype(int), probe.predict(features(test)))
