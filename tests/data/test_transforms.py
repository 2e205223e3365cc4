"""Batch augmentation: shapes and range, a seeded generator gives the same batch, each setting does what it says, and
a process's share of a batch is that share of the whole batch's augmentation (multi-process training)."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")

from faceattr.config import AugmentSettings  # noqa: E402
from faceattr.data.transforms import augment  # noqa: E402

NONE = AugmentSettings(flip=False, scale=0.0, shift=0.0, rotate=0.0, brightness=0.0, contrast=0.0, saturation=0.0)


def batch(n: int = 4, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, size, size, 3), generator=g, dtype=torch.uint8)


def test_shape_range_and_seeded_repeatability():
    x = batch()
    a = augment(x, AugmentSettings(), torch.Generator().manual_seed(0))
    b = augment(x, AugmentSettings(), torch.Generator().manual_seed(0))
    c = augment(x, AugmentSettings(), torch.Generator().manual_seed(1))
    assert a.shape == (4, 3, 32, 32) and a.dtype == torch.float32
    assert float(a.min()) >= 0 and float(a.max()) <= 255
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_no_augmentation_is_the_identity():
    x = batch()
    out = augment(x, NONE, torch.Generator().manual_seed(0))
    assert torch.allclose(out, x.permute(0, 3, 1, 2).float(), atol=1e-3)


def test_flip_mirrors_whole_images_and_brightness_only_scales():
    x = batch(n=64)
    flipped = augment(x, dataclasses.replace(NONE, flip=True), torch.Generator().manual_seed(0))
    ref = x.permute(0, 3, 1, 2).float()
    mirrored = [bool(torch.allclose(flipped[i], ref[i].flip(-1), atol=1e-3)) for i in range(64)]
    same = [bool(torch.allclose(flipped[i], ref[i], atol=1e-3)) for i in range(64)]
    assert all(m or s for m, s in zip(mirrored, same)) and 16 < sum(mirrored) < 48  # about half
    bright = augment(x[:1], dataclasses.replace(NONE, brightness=0.5), torch.Generator().manual_seed(3))
    ratio = bright[0] / ref[0].clamp(min=1)
    keep = (ref[0] > 10) & (bright[0] < 254)
    assert float(ratio[keep].std()) < 1e-3 and 0.5 <= float(ratio[keep].mean()) <= 1.5


def test_a_share_of_a_batch_is_augmented_as_in_the_whole_batch():
    x = batch(n=6)
    whole = augment(x, AugmentSettings(), torch.Generator().manual_seed(7))
    part = augment(x[2:5], AugmentSettings(), torch.Generator().manual_seed(7), rows=(2, 6))
    assert torch.allclose(part, whole[2:5], atol=1e-4)
    with pytest.raises(ValueError, match="outside"):
        augment(x[:3], AugmentSettings(), None, rows=(5, 6))
