"""Flip test-time augmentation, shared by the torch inference path and the (torch-free) Predictor."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

X = TypeVar("X")


def mirrored_mean(run: Callable[[X], Mapping[str, Any]], x: X, flip: Callable[[X], X]) -> dict[str, Any]:
    """The mean of the raw outputs for ``x`` and for its mirror image (torch tensors or numpy arrays alike)."""
    a, b = run(x), run(flip(x))
    return {k: (v + b[k]) / 2 for k, v in a.items()}
