"""Decoding head outputs into predictions, in numpy so the ONNX runtime path needs no torch.

Ordinal heads give a distribution over the K levels, as their formulation says (:mod:`faceattr.tasks.formulations`; e.g.
CORAL/OR-CNN: P(y > k) = sigmoid(logit_k) made non-increasing, P(y = k) = P(y > k-1) - P(y > k)). The estimate is
the distribution's expected value (e.g. age in years), the predicted level its median, and the interval its central
``coverage`` mass."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from faceattr.tasks.kinds import kind_of, ordinal_probs, quantile_index
from faceattr.tasks.task import Task

__all__ = ["decode_outputs", "decode_task", "ordinal_probs", "quantile_index"]


def decode_task(
    out: np.ndarray,
    task: Task,
    formulation: str = "coral",
    coverage: float = 0.8,
    calibration: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Decode one task's raw outputs (N x outputs) into arrays of predictions, by its kind
    (:mod:`faceattr.tasks.kinds`). With ``calibration`` (a model's fitted :mod:`faceattr.tasks.calibration`), class
    probabilities are temperature-scaled and a numeric task's interval is the split-conformal one; without it, the
    distribution's own central ``coverage`` interval."""
    return kind_of(task).decode(np.asarray(out), task, formulation, coverage, calibration)


def decode_outputs(
    outputs: dict[str, np.ndarray],
    tasks: Sequence[Task],
    formulation: str = "coral",
    coverage: float = 0.8,
    calibration: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    return {
        t.name: decode_task(outputs[t.name], t, formulation, coverage, calibration) for t in tasks if t.name in outputs
    }
