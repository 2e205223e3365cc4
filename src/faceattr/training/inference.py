"""Inference on batches of face chips: one path for training-time validation, ``faceattr evaluate``, audit, the
claims grid (torch), and its twin for ONNX models (``faceattr evaluate`` of an exported or the shipped default
model); the :class:`~faceattr.runtime.predictor.Predictor` shares their flip TTA (:mod:`faceattr.runtime.tta`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from faceattr.data.dataset import TensorDataset
from faceattr.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from faceattr.runtime.tta import FlipMode, flip_mean, run_numpy
from faceattr.tasks.task import Task

if TYPE_CHECKING:
    from faceattr.runtime.backends import Backend


@torch.inference_mode()
def predict_outputs(
    model: nn.Module,
    data: TensorDataset,
    batch_size: int = 256,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    tta_flip: FlipMode = False,
    tasks: Sequence[Task] = (),
    calibration: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Raw head outputs for every image (on the model's device, in float32); ``tta_flip`` averages them with the
    mirrored image's (for every face, or with thresholds for the uncertain ones: :mod:`~faceattr.runtime.tta`,
    which needs the model's ``tasks`` and ``calibration``)."""
    model.eval()
    device = next(model.parameters()).device

    def run(t: torch.Tensor) -> dict[str, np.ndarray]:
        return {k: v.float().cpu().numpy() for k, v in model(t).items()}

    outs: dict[str, list[np.ndarray]] = {}
    for x, _ in data.batches(batch_size, shuffle=False):
        xb = normalize(x.to(device), mean, std)
        o = flip_mean(run, xb, tta_flip, lambda t: torch.flip(t, dims=[3]), torch.cat, tasks, calibration)
        for k, v in o.items():
            outs.setdefault(k, []).append(np.asarray(v, np.float32))
    return {k: np.concatenate(v) for k, v in outs.items()}


def onnx_outputs(
    backend: Backend, data: TensorDataset, batch_size: int = 256, tta_flip: FlipMode = False
) -> dict[str, np.ndarray]:
    """Raw outputs of an ONNX model (:class:`OnnxBackend`) for every image, preprocessed as the
    Predictor does (the model's own mean/std, numpy); ``tta_flip`` as for :func:`predict_outputs`."""
    meta = backend.meta
    outs: dict[str, list[np.ndarray]] = {}
    for x, _ in data.batches(batch_size, shuffle=False):
        o = run_numpy(backend.run, meta.normalize(x.numpy()), tta_flip, meta.tasks, meta.calibration)
        for k, v in o.items():
            outs.setdefault(k, []).append(np.asarray(v, np.float32))
    return {k: np.concatenate(v) for k, v in outs.items()}
