"""Task heads and their decoders.

Ordinal tasks (K levels) can be formulated as
- ``coral``: K-1 binary "y > level k" outputs sharing one weight vector with K-1 biases, which makes the
  thresholds rank-consistent (Cao, Mirjalili & Raschka 2020, CORAL);
- ``binary``: K-1 independent binary classifiers (Niu et al. 2016, OR-CNN);
- ``softmax``: K-way softmax decoded by its expected value;
- ``regression``: one output, the level index, trained with L1.
Nominal tasks use a K-way softmax.
"""

from __future__ import annotations

import torch
from torch import nn

ORDINAL_FORMULATIONS = ("coral", "binary", "softmax", "regression")


class CoralLayer(nn.Module):
    """One shared weight vector + K-1 ordered biases (CORAL)."""

    def __init__(self, in_features: int, num_levels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, 1, bias=False)
        # biases start at decreasing values so that the initial P(y > k) decreases with k
        self.bias = nn.Parameter(torch.linspace(2.0, -2.0, num_levels - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + self.bias


def make_head(in_features: int, kind: str, num_classes: int, formulation: str = "coral",
              dropout: float = 0.2) -> nn.Module:
    if kind == "nominal":
        out: nn.Module = nn.Linear(in_features, num_classes)
    elif formulation == "coral":
        out = CoralLayer(in_features, num_classes)
    elif formulation == "binary":
        out = nn.Linear(in_features, num_classes - 1)
    elif formulation == "softmax":
        out = nn.Linear(in_features, num_classes)
    elif formulation == "regression":
        out = nn.Linear(in_features, 1)
    else:
        raise ValueError(f"unknown ordinal formulation {formulation!r}; choose from {ORDINAL_FORMULATIONS}")
    return nn.Sequential(nn.Dropout(dropout), out)


def num_head_outputs(kind: str, num_classes: int, formulation: str) -> int:
    if kind == "nominal" or formulation == "softmax":
        return num_classes
    return 1 if formulation == "regression" else num_classes - 1
