"""The decoded-image cache: shared by concurrent builders without collisions."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from faceattr.data import dataset


def _photos(folder: Path, n: int = 5) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    (folder / "bad.jpg").write_bytes(b"not an image")
    return [*paths, str(folder / "bad.jpg")]


def test_cache_round_trip(tmp_path):
    paths = _photos(tmp_path)
    cache = tmp_path / "cache"
    images, ok, errors = dataset.build_image_cache(paths, 16, cache, workers=1, progress=False)
    assert images.shape == (6, 16, 16, 3) and ok.tolist() == [True] * 5 + [False] and len(errors) == 1
    again, ok2, errors2 = dataset.build_image_cache(paths, 16, cache, workers=1, progress=False)
    np.testing.assert_array_equal(np.asarray(again), images)
    assert ok2.tolist() == ok.tolist() and errors2 == []  # loaded, not decoded again
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        f"images-{dataset._cache_key(paths, 16)}{s}" for s in (".npy", ".ok.npy")
    )


def test_concurrent_builders_do_not_collide(tmp_path, monkeypatch, caplog):
    """Two builders of the same cache reach the rename together (forced by a barrier): both must succeed."""
    paths = _photos(tmp_path)
    cache = tmp_path / "cache"
    barrier = threading.Barrier(2, timeout=10)
    real_replace = os.replace

    def replace_together(src, dst):
        barrier.wait()
        real_replace(src, dst)

    monkeypatch.setattr(dataset.os, "replace", replace_together)
    results: list[np.ndarray] = []
    caplog.set_level(logging.WARNING, logger="faceattr.data.dataset")
    threads = [
        threading.Thread(
            target=lambda: results.append(dataset.build_image_cache(paths, 16, cache, workers=1, progress=False)[0])
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2
    assert "could not write image cache" not in caplog.text
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind
    np.testing.assert_array_equal(np.load(cache / f"images-{dataset._cache_key(paths, 16)}.npy"), results[0])
