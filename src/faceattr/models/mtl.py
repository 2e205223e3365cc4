"""The deep multi-task network (DMTL): hard parameter sharing of shallow stages, task-specific deep branches.

``shared_stages = k`` stages of the backbone are shared by all tasks; each task owns a copy of the remaining
stages (initialised from the same ImageNet weights), global average pooling and its head. ``k`` equal to the
number of stages shares everything but the heads. ``forward()`` returns a dict keyed by task name.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import nn

from faceattr.models.backbones import MOBILENET_V2_STAGE_NAMES, mobilenet_v2_stages
from faceattr.registry import Registry
from faceattr.tasks.kinds import make_head
from faceattr.tasks.task import Task

MODELS: Registry[Callable[..., "MultiTaskNet"]] = Registry("model")


def register_model(name: str) -> Callable[[Callable[..., "MultiTaskNet"]], Callable[..., "MultiTaskNet"]]:
    return MODELS.register(name)


def list_models() -> list[str]:
    return sorted(MODELS.names())


def create_model(name: str, tasks: Sequence[Task], **kwargs: object) -> "MultiTaskNet":
    return MODELS.get(name)(tasks=tasks, **kwargs)


class MultiTaskNet(nn.Module):
    def __init__(
        self,
        stages: Sequence[nn.Module],
        stage_channels: Sequence[int],
        stage_names: Sequence[str],
        tasks: Sequence[Task],
        shared_stages: int,
        ordinal_formulation: str = "coral",
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        n = len(stages)
        if not 1 <= shared_stages <= n:
            raise ValueError(f"shared_stages must be in 1..{n} (1 = only the stem shared, {n} = all shared)")
        if not tasks:
            raise ValueError("at least one task is needed")
        self.weights_origin = "unknown"  # where the initial weights came from (recorded in checkpoints)
        self.tasks = tuple(tasks)
        self.task_names = tuple(t.name for t in tasks)
        self.shared_stages = shared_stages
        self.ordinal_formulation = ordinal_formulation
        self.stage_names = tuple(stage_names)
        self.shared = nn.Sequential(*stages[:shared_stages])
        rest = list(stages[shared_stages:])
        self.branches = nn.ModuleDict({t.name: nn.Sequential(*copy.deepcopy(rest)) for t in tasks})
        feat = stage_channels[-1]
        self.num_features = feat
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.heads = nn.ModuleDict({t.name: make_head(feat, t, ordinal_formulation, dropout) for t in tasks})

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(x)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-task pooled features (N x C) after the shared trunk and each task's branch."""
        z = self.forward_shared(x)
        return {t: torch.flatten(self.pool(self.branches[t](z)), 1) for t in self.task_names}

    def forward_head(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {t: self.heads[t](features[t]) for t in self.task_names}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_head(self.forward_features(x))

    def branch_last_layer(self, task: str) -> nn.Module:
        """The last convolutional block a task owns (or the shared trunk's, when everything is shared)."""
        branch = cast(nn.Sequential, self.branches[task])
        return branch[-1] if len(branch) else self.shared[-1]


@register_model("mobilenet_v2")
def mobilenet_v2_mtl(
    tasks: Sequence[Task],
    shared_stages: int = 5,
    ordinal_formulation: str = "coral",
    dropout: float = 0.2,
    pretrained: bool = True,
    allow_download: bool = False,
) -> MultiTaskNet:
    stages, channels, origin = mobilenet_v2_stages(pretrained, allow_download)
    model = MultiTaskNet(stages, channels, MOBILENET_V2_STAGE_NAMES, tasks, shared_stages, ordinal_formulation, dropout)
    model.weights_origin = origin
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
