"""Decoding head outputs into predictions, in numpy so the ONNX runtime path needs no torch.

Ordinal heads give a distribution over the K levels, as their formulation says (:mod:`faceattr.tasks.formulations`; e.g.
CORAL/OR-CNN: P(y > k) = sigmoid(logit_k) made non-increasing, P(y = k) = P(y > k-1) - P(y > k)). The estimate is
the distribution's expected value (e.g. age in years), the predicted level its median, and the interval its central
``coverage`` mass."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from faceattr.tasks.calibration import (
    INTERVAL_METHOD_SD,
    apply_class_calibration,
    conformal_interval,
    interval_for,
    interval_method,
    spread,
)
from faceattr.tasks.formulations import get_formulation
from faceattr.tasks.task import Task


def ordinal_probs(out: np.ndarray, formulation: str, num_levels: int) -> np.ndarray:
    """N x K level probabilities implied by an ordinal head's outputs (see :mod:`faceattr.tasks.formulations`)."""
    return get_formulation(formulation).level_probs(out, num_levels)


def quantile_index(probs: np.ndarray, q: float) -> np.ndarray:
    """Index of the smallest level whose CDF reaches ``q``."""
    cdf = np.cumsum(probs / np.clip(probs.sum(-1, keepdims=True), 1e-12, None), -1)
    return np.minimum((cdf < q - 1e-9).sum(-1), probs.shape[-1] - 1)


def decode_task(
    out: np.ndarray,
    task: Task,
    formulation: str = "coral",
    coverage: float = 0.8,
    calibration: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Decode one task's raw outputs (N x outputs) into arrays of predictions. With ``calibration`` (a model's
    fitted :mod:`faceattr.tasks.calibration`), class probabilities are temperature-scaled and a numeric task's interval
    is the split-conformal one; without it, the distribution's own central ``coverage`` interval."""
    out = np.asarray(out)
    if task.kind == "nominal":
        temp = float(((calibration or {}).get("temperature") or {}).get(task.name, 1.0))
        p = apply_class_calibration(out, temp, ((calibration or {}).get("bias") or {}).get(task.name))
        return {"probs": p, "index": p.argmax(-1)}
    p = ordinal_probs(out, formulation, task.num_classes)
    v = np.asarray(task.values)
    a = (1 - coverage) / 2
    expected = (p * v).sum(-1) / np.clip(p.sum(-1), 1e-12, None)
    if get_formulation(formulation).point_estimate:
        # a point estimate carries no distribution: its interval is the point itself
        return {
            "probs": p,
            "value": expected,
            "index": np.rint(np.clip(out[:, 0], 0, task.num_classes - 1)).astype(int),
            "low": expected,
            "high": expected,
        }
    q = interval_for(calibration, task.name, coverage) if task.is_numeric else None
    if q is not None:
        method = interval_method(calibration, task.name)
        # the face's own spread, only for the score that is scaled by it (per call on the prediction path)
        sd = (
            spread(p / np.clip(p.sum(-1, keepdims=True), 1e-12, None), v, expected)
            if method == INTERVAL_METHOD_SD
            else None
        )
        low, high = conformal_interval(expected, q, float(v[0]), float(v[-1]), method, sd)
    else:
        low, high = v[quantile_index(p, a)], v[quantile_index(p, 1 - a)]
    return {"probs": p, "value": expected, "index": quantile_index(p, 0.5), "low": low, "high": high}


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
