"""Flip test-time augmentation, shared by the torch inference path and the (torch-free) Predictor.

A flip setting (:data:`FlipMode`) is ``False`` (one view per face), ``True`` (every face averaged with its mirror
image) or a mapping ``{task: threshold}``: only the faces whose calibrated top-class probability for one of those
nominal tasks is below its threshold get their mirror image, the others keep their single view. Each face's outputs
are then those of one of the two other settings (to float rounding: the network has no batch-dependent layer at
inference), at the cost of a second pass for the uncertain faces only."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias, TypeVar

import numpy as np

from faceattr.errors import check
from faceattr.tasks.decode import decode_task
from faceattr.tasks.task import Task

X = TypeVar("X")
FlipMode: TypeAlias = bool | Mapping[str, float]


def mirrored_mean(
    run: Callable[[X], Mapping[str, Any]],
    x: X,
    flip: Callable[[X], X],
    concat: Callable[[list[X]], X],
) -> dict[str, Any]:
    """The mean of the raw outputs for ``x`` and for its mirror image (torch tensors or numpy arrays alike).

    Both views go through the network in one batch of 2N (``concat``): on 2 CPU cores the INT8 network takes
    1.7 ms for a batch of two faces against 2 x 1.05 ms for two batches of one. Batching changes no output: the
    network has no batch-dependent layer at inference (batch norm uses its running statistics, INT8 is static)."""
    n = len(x)  # type: ignore[arg-type]
    both = run(concat([x, flip(x)]))
    return {k: (v[:n] + v[n:]) / 2 for k, v in both.items()}


def check_flip(flip: Any, tasks: Sequence[Task]) -> FlipMode:
    """``flip`` validated against a model's tasks: a bool, or thresholds in (0, 1] for some of its nominal tasks."""
    if isinstance(flip, bool):
        return flip
    check(
        isinstance(flip, Mapping) and len(flip) > 0,
        f"tta_flip must be true, false or {{task: threshold}}, got {flip!r}",
    )
    nominal = [t.name for t in tasks if t.kind == "nominal"]
    for k, v in flip.items():
        check(k in nominal, f"tta_flip thresholds apply to this model's nominal tasks {nominal}, not {k!r}")
        check(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 < float(v) <= 1.0,
            f"the tta_flip threshold of {k!r} must be in (0, 1], got {v!r}",
        )
    return {str(k): float(v) for k, v in flip.items()}


def uncertain(
    raw: Mapping[str, Any],
    below: Mapping[str, float],
    tasks: Sequence[Task],
    calibration: Mapping[str, Any] | None,
) -> np.ndarray:
    """Which faces of a batch's raw outputs are uncertain: a calibrated top-class probability below ``below[task]``
    for any of those tasks (boolean, one per face)."""
    by_name = {t.name: t for t in tasks}
    n = len(next(iter(raw.values())))
    sel = np.zeros(n, bool)
    for name, thr in below.items():
        p = decode_task(np.asarray(raw[name]), by_name[name], calibration=calibration)["probs"]
        sel |= p.max(-1) < thr
    return sel


def flip_mean(
    run: Callable[[X], Mapping[str, Any]],
    x: X,
    flip: FlipMode,
    mirror: Callable[[X], X],
    concat: Callable[[list[X]], X],
    tasks: Sequence[Task] = (),
    calibration: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``run(x)`` for a batch (torch or numpy; ``run`` returns numpy arrays where ``flip`` has thresholds); with
    ``flip=True`` the mean over it and its mirror image; with thresholds (module doc) that mean for the uncertain
    faces only (``tasks`` and ``calibration``: the model's, to decide which)."""
    flip = flip if isinstance(flip, Mapping) else bool(flip)  # numpy booleans too
    if flip is False:
        return dict(run(x))
    if flip is True:
        return mirrored_mean(run, x, mirror, concat)
    return gated_mean(dict(run(x)), lambda idx: run(mirror(x[idx])), flip, tasks, calibration)  # type: ignore[index]


def run_numpy(
    run: Callable[[np.ndarray], Mapping[str, Any]],
    x: np.ndarray,
    flip: FlipMode,
    tasks: Sequence[Task] = (),
    calibration: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """:func:`flip_mean` for a numpy N x C x H x W batch (the Predictor's and the ONNX evaluation's one path)."""
    return flip_mean(run, x, flip, lambda a: np.ascontiguousarray(a[..., ::-1]), np.concatenate, tasks, calibration)


def gated_mean(
    single: dict[str, Any],
    run_mirrored: Callable[[np.ndarray], Mapping[str, Any]],
    below: Mapping[str, float],
    tasks: Sequence[Task],
    calibration: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """``single`` (one view's raw numpy outputs) with the uncertain faces' rows replaced by the mean over both views;
    ``run_mirrored(indices)`` gives the mirror images' raw outputs of those faces."""
    idx = np.flatnonzero(uncertain(single, below, tasks, calibration))
    if not len(idx):
        return single
    mirrored = run_mirrored(idx)
    out = {}
    for k, v in single.items():
        v = np.array(v, copy=True)
        v[idx] = (v[idx] + np.asarray(mirrored[k])) / 2
        out[k] = v
    return out


def flip_words(flip: Any) -> str:
    """A report's words for a flip setting (as stored in a result's JSON), with a leading space; '' for none."""
    if flip is True:
        return " (flip test-time augmentation)"
    if isinstance(flip, Mapping) and flip:
        ts = " or ".join(f"{k} < {float(v):g}" for k, v in flip.items())
        return f" (flip test-time augmentation for the faces whose top probability is uncertain: {ts})"
    return ""
