"""Task losses as small pure functions with shape checks; a label of -1 (missing) contributes nothing.

Each returns the mean loss over the samples that have a label (0 with a zero gradient when none has),
and the number of those samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from faceattr.tasks import MISSING


def _check(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.ndim != 2:
        raise ValueError(f"logits must be N x C, got shape {tuple(logits.shape)}")
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must be (N,) with N={logits.shape[0]}, got shape {tuple(labels.shape)}")


def levels_from_labels(labels: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Binary targets (N x K-1): target[i, k] = 1 if label_i > k ("is the level above threshold k?")."""
    k = torch.arange(num_levels - 1, device=labels.device)
    return (labels[:, None] > k[None, :]).to(torch.float32)


def ordinal_binary_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Masked binary cross-entropy over the K-1 "y > k" sub-problems, summed over k, averaged over samples.

    This is the loss of CORAL (Cao, Mirjalili & Raschka, "Rank consistent ordinal regression for neural
    networks", Pattern Recognition Letters 2020, eq. 4, unit task weights) and of OR-CNN (Niu et al., CVPR 2016).
    ``logits``: N x (K-1); ``labels``: N level indices in [0, K-1] or -1.
    """
    _check(logits, labels)
    mask = labels != MISSING
    n = int(mask.sum())
    if n == 0:
        return logits.sum() * 0.0, 0
    lg, lb = logits[mask], labels[mask]
    if int(lb.max()) > logits.shape[1] or int(lb.min()) < 0:
        raise ValueError(f"ordinal label out of range for {logits.shape[1] + 1} levels")
    target = levels_from_labels(lb, logits.shape[1] + 1)
    per = F.binary_cross_entropy_with_logits(lg.float(), target, reduction="none").sum(1)
    return per.mean(), n


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
                       ) -> tuple[torch.Tensor, int]:
    """Masked softmax cross-entropy (nominal tasks, and the softmax formulation of ordinal ones)."""
    _check(logits, labels)
    mask = labels != MISSING
    n = int(mask.sum())
    if n == 0:
        return logits.sum() * 0.0, 0
    return F.cross_entropy(logits[mask].float(), labels[mask], label_smoothing=label_smoothing), n


def l1_index_loss(pred: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Masked L1 between a scalar prediction (N x 1) and the level index (plain regression baseline)."""
    _check(pred, labels)
    if pred.shape[1] != 1:
        raise ValueError(f"regression output must be N x 1, got {tuple(pred.shape)}")
    mask = labels != MISSING
    n = int(mask.sum())
    if n == 0:
        return pred.sum() * 0.0, 0
    return (pred[mask, 0].float() - labels[mask].float()).abs().mean(), n


def task_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str, formulation: str = "coral",
              label_smoothing: float = 0.0) -> tuple[torch.Tensor, int]:
    """The loss of one task's head output, by the task's kind and (for ordinal tasks) formulation."""
    if kind == "nominal":
        return cross_entropy_loss(logits, labels, label_smoothing)
    if formulation in ("coral", "binary"):
        return ordinal_binary_loss(logits, labels)
    if formulation == "softmax":
        return cross_entropy_loss(logits, labels)
    if formulation == "regression":
        return l1_index_loss(logits, labels)
    raise ValueError(f"unknown ordinal formulation {formulation!r}")
