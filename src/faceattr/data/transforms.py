"""Tensor transforms, apart from the datasets: normalisation and batch augmentation (on any device)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from faceattr.config import AugmentSettings

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(
    x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """uint8 NHWC (or float NCHW in 0..255) -> normalised float NCHW in channels_last memory layout."""
    if x.dtype == torch.uint8:
        x = x.permute(0, 3, 1, 2).float()
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1) * 255.0
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1) * 255.0
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)


def augment(
    x: torch.Tensor,
    cfg: AugmentSettings,
    generator: torch.Generator | None = None,
    rows: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Random flip, scale/shift/rotation and colour jitter on a uint8 NHWC batch; returns float NCHW in 0..255.

    ``rows=(offset, total)``: ``x`` is rows offset.. of a batch of ``total``; the parameters are drawn for the
    whole batch and this part's are used, so the processes of a multi-process run augment as one would."""
    n = x.shape[0]
    offset, total = rows if rows is not None else (0, n)
    if offset < 0 or offset + n > total:
        raise ValueError(f"augment: rows {offset}..{offset + n} outside a batch of {total}")
    g = generator
    xf = x.permute(0, 3, 1, 2).float()

    dev = x.device

    def rand() -> torch.Tensor:  # drawn on the CPU generator: the same draws on any device
        return torch.rand(total, generator=g)[offset : offset + n]

    def u(lo: float, hi: float) -> torch.Tensor:
        return (rand() * (hi - lo) + lo).to(dev)

    if cfg.brightness or cfg.contrast or cfg.saturation:
        b = u(1 - cfg.brightness, 1 + cfg.brightness).view(n, 1, 1, 1)
        c = u(1 - cfg.contrast, 1 + cfg.contrast).view(n, 1, 1, 1)
        s = u(1 - cfg.saturation, 1 + cfg.saturation).view(n, 1, 1, 1)
        xf = xf * b
        mean = xf.mean(dim=(1, 2, 3), keepdim=True)
        xf = (xf - mean) * c + mean
        gray = 0.299 * xf[:, 0:1] + 0.587 * xf[:, 1:2] + 0.114 * xf[:, 2:3]
        xf = (xf - gray) * s + gray
    ang = u(-cfg.rotate, cfg.rotate) * math.pi / 180.0
    sc = 1.0 / u(1 - cfg.scale, 1 + cfg.scale)
    flip = (torch.where(rand() < 0.5, -1.0, 1.0) if cfg.flip else torch.ones(n)).to(dev)
    tx, ty = u(-cfg.shift, cfg.shift) * 2, u(-cfg.shift, cfg.shift) * 2
    cos, sin = torch.cos(ang) * sc, torch.sin(ang) * sc
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(xf.shape), align_corners=False)
    xf = F.grid_sample(xf, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return xf.clamp_(0, 255)
