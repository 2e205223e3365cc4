"""The decoded-image cache: where it lives, what is in it, how to empty it.

Training and evaluation decode each dataset once into ``images-<key>.npy`` (N x S x S x 3 uint8: about 112 MB per
UTKFace split at 128 px) plus ``images-<key>.ok.npy``, and computed protocol splits into ``split-*.csv``, under
``$FACEATTR_CACHE`` (default ``~/.cache/faceattr``). A key covers the files, their sizes and times and the size S,
so a changed dataset gets a new entry and old ones stay until cleared: ``faceattr cache --clear``.
"""

from __future__ import annotations

import os
from pathlib import Path

PATTERNS = ("images-*.npy", "split-*.csv")


def default_cache_dir() -> Path:
    return Path(os.environ.get("FACEATTR_CACHE", Path.home() / ".cache" / "faceattr"))


def cache_files(cache_dir: str | Path | None = None) -> list[Path]:
    """faceattr's own files in the cache folder (nothing else there is touched)."""
    d = Path(cache_dir) if cache_dir else default_cache_dir()
    if not d.is_dir():
        return []
    return sorted({p for pat in PATTERNS for p in d.glob(pat) if p.is_file()})


def clear_cache(cache_dir: str | Path | None = None) -> tuple[int, int]:
    """Delete faceattr's cache files; returns (files, bytes) removed."""
    n = size = 0
    for p in cache_files(cache_dir):
        size += p.stat().st_size
        p.unlink()
        n += 1
    return n, size
