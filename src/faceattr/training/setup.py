"""What a training run is built from: the optimiser (the loss weighting's parameters with their own learning
rate), the warm-up + cosine schedule, and weights taken over from another checkpoint."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from torch import nn

from faceattr.config import ExperimentConfig
from faceattr.models.checkpoint import (
    load_state,
)
from faceattr.training.weighting import LossWeighting

log = logging.getLogger(__name__)


def build_optimizer(model: nn.Module, weighting: LossWeighting, cfg: ExperimentConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norms; the weighting's parameters get their own lr, no decay."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, p in model.named_parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.train.weight_decay, "lr": cfg.train.lr},
        {"params": no_decay, "weight_decay": 0.0, "lr": cfg.train.lr},
    ]
    wp = list(weighting.parameters())
    if wp:
        groups.append({"params": wp, "weight_decay": 0.0, "lr": cfg.train.weighting_lr, "name": "loss_weighting"})
    return torch.optim.AdamW(groups, lr=cfg.train.lr)


def build_scheduler(
    opt: torch.optim.Optimizer, steps_per_epoch: int, cfg: ExperimentConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay, per step; the loss-weighting group keeps a constant lr."""
    total = max(1, steps_per_epoch * cfg.train.epochs)
    warm = max(1, int(cfg.train.warmup_epochs * steps_per_epoch))

    def net(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    lambdas = [net, net] + [lambda step: 1.0] * (len(opt.param_groups) - 2)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambdas)


def init_from_checkpoint(model: nn.Module, path: str | Path) -> str:
    """Copy every tensor of a faceattr checkpoint whose name and shape match (transfer between datasets:
    the trunk and branches carry over, heads with other levels/classes stay fresh)."""
    state = load_state(path)
    own = model.state_dict()
    take = {
        k: v.float() if v.is_floating_point() else v for k, v in state.items() if k in own and own[k].shape == v.shape
    }
    model.load_state_dict(take, strict=False)
    log.info("initialised %d of %d tensors from %s", len(take), len(own), path)
    return f"faceattr checkpoint {path} ({len(take)} of {len(own)} tensors; the rest ImageNet or fresh)"
