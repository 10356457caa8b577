"""Phase 3 gate: a small MLP that predicts whether stage 1's decision is correct ("trust or defer").

Inputs per image: stage 1's pooled features, its logit, |p − 0.5| and the entropy of p (standardised
with statistics of the fitting part of val_calib). Plain torch on CPU: no Lightning needed.

Losses:
- ``bce``: binary cross-entropy on correctness; gate score = P(correct).
- ``gatekeeper`` (after Rabanser et al., 2025, "Gatekeeper"): the gate emits a two-way distribution q
  over stage 1's decision (agree / disagree). On samples stage 1 got right it minimises the
  cross-entropy of "agree"; on samples it got wrong it minimises KL(uniform ‖ q), pushing q to be
  uncertain rather than confidently wrong. ``gatekeeper_alpha`` weighs the two terms. Gate score = q(agree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from streetvision.errors import StreetvisionError


class GateUnfittableError(StreetvisionError, ValueError):
    """val_calib holds no error of stage 1 (or no correct answer): there is nothing to learn."""


@dataclass(frozen=True)
class GateFit:
    """How the gate is fitted (the ``gate`` config section)."""

    loss: str  # bce | gatekeeper
    gatekeeper_alpha: float
    hidden: int
    lr: float
    weight_decay: float
    batch_size: int
    max_epochs: int
    patience: int  # epochs without hold-out improvement before stopping
    holdout_fraction: float
    seed: int


@dataclass
class GateInputs:
    features: np.ndarray  # (n, d) pooled stage-1 features
    logits: np.ndarray  # (n,)

    def matrix(self) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-self.logits))
        eps = 1e-12
        entropy = -(p * np.log(p + eps) + (1 - p) * np.log(1 - p + eps))
        signals = np.stack([self.logits, np.abs(p - 0.5), entropy], axis=1)
        return np.concatenate([self.features, signals], axis=1).astype(np.float32)


class GateMLP(nn.Module):
    def __init__(self, in_dim: int, hidden: int, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logit of "stage 1 is correct"."""
        return self.net((x - self.mean) / self.std).squeeze(-1)


def gate_loss(logits: torch.Tensor, correct: torch.Tensor, kind: str, alpha: float) -> torch.Tensor:
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, correct)
    if kind != "gatekeeper":
        raise ValueError(f"config key 'gate.loss': unknown loss {kind!r}")
    log_agree, log_disagree = F.logsigmoid(logits), F.logsigmoid(-logits)
    right = -log_agree  # cross-entropy of "agree"
    wrong = -0.5 * (log_agree + log_disagree) - math.log(2.0)  # KL(uniform || q)
    n_right, n_wrong = correct.sum().clamp(min=1), (1 - correct).sum().clamp(min=1)
    return alpha * (right * correct).sum() / n_right + (1 - alpha) * (wrong * (1 - correct)).sum() / n_wrong


def fit_gate(x: np.ndarray, correct: np.ndarray, fit: GateFit) -> tuple[GateMLP, dict]:
    """Fit on val_calib with an internal hold-out for early stopping (lowest hold-out loss)."""
    generator = np.random.default_rng(fit.seed)
    torch.manual_seed(fit.seed)
    order = generator.permutation(len(x))
    n_hold = max(1, int(round(fit.holdout_fraction * len(x))))
    hold, rows = order[:n_hold], order[n_hold:]
    xt, yt = torch.from_numpy(x), torch.from_numpy(correct.astype(np.float32))
    mean = xt[rows].mean(0)
    std = xt[rows].std(0).clamp(min=1e-6)
    gate = GateMLP(x.shape[1], fit.hidden, mean, std)
    optimizer = torch.optim.AdamW(gate.parameters(), lr=fit.lr, weight_decay=fit.weight_decay)
    best = (math.inf, 0, {k: v.clone() for k, v in gate.state_dict().items()})
    for epoch in range(fit.max_epochs):
        gate.train()
        for batch in torch.from_numpy(generator.permutation(rows)).split(fit.batch_size):
            optimizer.zero_grad()
            gate_loss(gate(xt[batch]), yt[batch], fit.loss, fit.gatekeeper_alpha).backward()
            optimizer.step()
        gate.eval()
        with torch.no_grad():
            held_out = gate_loss(gate(xt[hold]), yt[hold], fit.loss, fit.gatekeeper_alpha).item()
        if held_out < best[0]:
            best = (held_out, epoch, {k: v.clone() for k, v in gate.state_dict().items()})
        elif epoch - best[1] >= fit.patience:
            break
    gate.load_state_dict(best[2])
    gate.eval()
    return gate, {"best_epoch": best[1], "holdout_loss": best[0], "n_fit": len(rows), "n_holdout": len(hold)}


@torch.no_grad()
def gate_scores(gate: GateMLP, x: np.ndarray) -> np.ndarray:
    """P(stage 1 correct) under the gate, in [0, 1]; higher = more trustworthy."""
    return torch.sigmoid(gate(torch.from_numpy(x))).double().numpy()


def cross_fit_folds(n: int, folds: int, seed: int) -> list[np.ndarray]:
    """Row indices of ``folds`` disjoint, shuffled folds covering range(n)."""
    if not 2 <= folds <= n:
        raise ValueError(f"folds: need 2 <= folds <= {n} rows, got {folds}")
    return np.array_split(np.random.default_rng(seed).permutation(n), folds)


def cross_fitted_gate_scores(x: np.ndarray, correct: np.ndarray, fit: GateFit, folds: int = 5) -> np.ndarray:
    """Out-of-fold gate P(correct) for every row: each fold is scored by a gate fitted (``fit_gate``, same
    settings) on the other folds only.

    The gate fitted on all of val_calib scores val_calib optimistically; SCRC's reference sequence is built
    from these out-of-fold scores instead, which behave like the scores of unseen images.
    """
    scores = np.empty(len(x), dtype=np.float64)
    for held_out in cross_fit_folds(len(x), folds, fit.seed):
        fitted_on = np.setdiff1d(np.arange(len(x)), held_out)
        gate, _ = fit_gate(x[fitted_on], correct[fitted_on], fit)
        scores[held_out] = gate_scores(gate, x[held_out])
    return scores


