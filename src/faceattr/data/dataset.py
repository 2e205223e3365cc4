"""Fast loading: images decoded and resized once into a uint8 cache, augmented on whole batches as tensors.

On a 2-core CPU, JPEG decoding and resizing every epoch would cost about as much as the network itself, so
:func:`build_image_cache` decodes each image once into an ``N x S x S x 3`` uint8 array saved under the cache
folder (keyed by the files, their sizes and mtimes, and ``S``). Augmentation then runs on batches in torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from faceattr.data.cache import default_cache_dir
from faceattr.data.combine import HI, hi_column
from faceattr.data.readers import SampleTable
from faceattr.tasks.task import MISSING
from faceattr.vision.image import ImageError, load_image, square_resize

log = logging.getLogger(__name__)


def _decode_one(args: tuple[str, int]) -> tuple[np.ndarray | None, str | None]:
    path, size = args
    try:
        return square_resize(load_image(path), size), None
    except ImageError as e:
        return None, str(e)


def _cache_key(paths: Sequence[str], size: int) -> str:
    h = hashlib.sha256(f"v1|{size}|".encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}|{st.st_size}|{int(st.st_mtime)}\n".encode())
        except OSError:
            h.update(f"{p}|missing\n".encode())
    return h.hexdigest()[:20]


def build_image_cache(
    paths: Sequence[str], size: int, cache_dir: Path | None = None, workers: int | None = None, progress: bool = True
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode ``paths`` to ``size`` px once. Returns (images uint8 NxSxSx3, ok mask, errors).

    Unreadable images are reported (not fatal): their rows are zero and ``ok`` is False.
    """
    cache_dir = Path(cache_dir or default_cache_dir())
    key = _cache_key(paths, size)
    f_img, f_ok = cache_dir / f"images-{key}.npy", cache_dir / f"images-{key}.ok.npy"
    if f_img.is_file() and f_ok.is_file():
        try:
            return np.load(f_img, mmap_mode="r"), np.load(f_ok), []
        except (OSError, ValueError) as e:
            log.warning("image cache %s unreadable (%s); rebuilding", f_img, e)
    images = np.zeros((len(paths), size, size, 3), np.uint8)
    ok = np.zeros(len(paths), bool)
    errors: list[str] = []
    workers = workers or min(4, os.cpu_count() or 1)
    jobs = [(str(p), size) for p in paths]
    it: Iterator[tuple[np.ndarray | None, str | None]]
    if workers > 1 and len(jobs) > 256:
        ex = ProcessPoolExecutor(max_workers=workers)
        it = ex.map(_decode_one, jobs, chunksize=64)
    else:
        ex = None
        it = map(_decode_one, jobs)
    try:
        from tqdm.auto import tqdm

        for i, (arr, err) in enumerate(
            tqdm(it, total=len(jobs), desc=f"decoding to {size}px", disable=not progress, mininterval=2.0)
        ):
            if arr is None:
                errors.append(err or paths[i])
            else:
                images[i] = arr
                ok[i] = True
    finally:
        if ex is not None:
            ex.shutdown()
    if errors:
        log.warning("%d unreadable images skipped, e.g. %s", len(errors), errors[0])
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # the mask first, then the images (their presence is what readers check), each under a temporary name
        # of its own: two processes building the same cache at once (two training lanes) must not collide
        _save_npy_atomic(f_ok, ok)
        _save_npy_atomic(f_img, images)
    except OSError as e:
        log.warning("could not write image cache in %s (%s); continuing without it", cache_dir, e)
    return images, ok, errors


def _save_npy_atomic(path: Path, arr: np.ndarray) -> None:
    """``np.save`` to a unique temporary file beside ``path``, renamed onto it when complete."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass
class TensorDataset:
    """Images (uint8 NHWC) + label matrix (N x T, -1 = missing), drawn in batches.

    ``task_names`` name the label columns: one per task, then ``<task>@hi`` upper levels where some ordinal
    labels are intervals (see :mod:`faceattr.data.combine`)."""

    images: np.ndarray | torch.Tensor
    labels: np.ndarray
    task_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: str | torch.device) -> "TensorDataset":
        """The images as one uint8 tensor on ``device`` (a GPU: batches are then drawn there, no copies)."""
        if torch.device(device).type == "cpu":
            return self
        return TensorDataset(
            torch.as_tensor(np.ascontiguousarray(self.images)).to(device), self.labels, self.task_names
        )

    def batches(
        self,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        part: tuple[int, int] | None = None,
    ) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """Batches of ``batch_size`` rows (sorted within a batch). ``part=(i, n)``: only the i-th of n equal
        contiguous slices of every batch (one process's share of a batch in multi-process training; the order
        and the batches themselves are the same in every process)."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = (n // batch_size) * batch_size if drop_last else n
        if part is not None and batch_size % part[1]:
            raise ValueError(f"batch size {batch_size} is not divisible by {part[1]} processes")
        for s in range(0, stop, batch_size):
            idx = np.sort(order[s : s + batch_size].numpy())
            if part is not None:
                b = batch_size // part[1]
                idx = idx[part[0] * b : (part[0] + 1) * b]
            if isinstance(self.images, torch.Tensor):
                x = self.images[torch.from_numpy(idx).to(self.images.device)]
                y = torch.from_numpy(self.labels[idx]).to(self.images.device)
            else:
                x = torch.from_numpy(np.ascontiguousarray(self.images[idx]))
                y = torch.from_numpy(self.labels[idx])
            yield x, {t: y[:, j] for j, t in enumerate(self.task_names)}

    def rows(self, start: int, stop: int) -> "TensorDataset":
        """Rows [start, stop) as a dataset (a view, no copy)."""
        return TensorDataset(self.images[start:stop], self.labels[start:stop], self.task_names)

    def exact_labels(self) -> dict[str, np.ndarray]:
        """Labels by task for metrics: an interval-censored ordinal label counts as missing there."""
        cols = {t: self.labels[:, j] for j, t in enumerate(self.task_names)}
        out = {}
        for t, y in cols.items():
            if t.endswith(HI):
                continue
            hi = cols.get(hi_column(t))
            out[t] = y if hi is None else np.where(hi == y, y, MISSING)
        return out

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return len(self) // batch_size if drop_last else math.ceil(len(self) / batch_size)


def make_tensor_dataset(
    table: SampleTable, size: int, cache_dir: Path | None = None, progress: bool = True
) -> TensorDataset:
    """Decode (or load from cache) the table's images; rows whose image is unreadable are dropped and reported."""
    paths = list(table.frame["path"])
    images, ok, errors = build_image_cache(paths, size, cache_dir, progress=progress)
    for e in errors:
        table.report.skip("unreadable image", e)
    names = tuple(t.name for t in table.tasks)
    names += tuple(c for c in map(hi_column, names) if c in table.frame)  # interval-censored labels
    labels = table.frame[list(names)].to_numpy(np.int64)
    if not ok.all():
        keep = np.flatnonzero(ok)
        return TensorDataset(np.asarray(images[keep]), labels[keep], names)
    return TensorDataset(images, labels, names)
