"""Task heads: a K-way linear layer for nominal tasks; for ordinal tasks the layer its formulation makes
(see :mod:`faceattr.tasks.formulations`), e.g. CORAL's one shared weight vector with K-1 biases."""

from __future__ import annotations

import torch
from torch import nn


class CoralLayer(nn.Module):
    """One shared weight vector + K-1 ordered biases (CORAL)."""

    def __init__(self, in_features: int, num_levels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, 1, bias=False)
        # biases start at decreasing values so that the initial P(y > k) decreases with k
        self.bias = nn.Parameter(torch.linspace(2.0, -2.0, num_levels - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + self.bias
