"""Inference on batches of face chips: one path for training-time validation, ``faceattr evaluate``, audit, the
claims grid (torch), and its twin for ONNX models (``faceattr evaluate`` of an exported or the shipped default
model); the :class:`~faceattr.predict.Predictor` shares their flip TTA (:mod:`faceattr.tta`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from faceattr.data.dataset import TensorDataset
from faceattr.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from faceattr.tta import mirrored_mean, run_numpy

if TYPE_CHECKING:
    from faceattr.predict import OnnxBackend


@torch.inference_mode()
def predict_outputs(
    model: nn.Module,
    data: TensorDataset,
    batch_size: int = 256,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    tta_flip: bool = False,
) -> dict[str, np.ndarray]:
    """Raw head outputs for every image (on the model's device, in float32); ``tta_flip`` averages them with the
    mirrored image's."""
    model.eval()
    device = next(model.parameters()).device
    outs: dict[str, list[np.ndarray]] = {}
    for x, _ in data.batches(batch_size, shuffle=False):
        xb = normalize(x.to(device), mean, std)
        o = mirrored_mean(model, xb, lambda t: torch.flip(t, dims=[3]), torch.cat) if tta_flip else model(xb)
        for k, v in o.items():
            outs.setdefault(k, []).append(v.float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}


def onnx_outputs(
    backend: OnnxBackend, data: TensorDataset, batch_size: int = 256, tta_flip: bool = False
) -> dict[str, np.ndarray]:
    """Raw outputs of an ONNX model (:class:`~faceattr.predict.OnnxBackend`) for every image, preprocessed as the
    Predictor does (the model's own mean/std, numpy); ``tta_flip`` as for :func:`predict_outputs`."""
    outs: dict[str, list[np.ndarray]] = {}
    for x, _ in data.batches(batch_size, shuffle=False):
        o = run_numpy(backend.run, backend.meta.normalize(x.numpy()), tta_flip)
        for k, v in o.items():
            outs.setdefault(k, []).append(np.asarray(v, np.float32))
    return {k: np.concatenate(v) for k, v in outs.items()}
