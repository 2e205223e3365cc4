"""The one statistical rule for comparing two arms, shared by ``faceattr claims`` and ``faceattr ablate``.

For a comparison "A beats B" on a metric, the two arms' per-face test results are compared face by face and the mean
difference gets a 95 % interval from a paired bootstrap over the test faces. The rule (:func:`verdict`):

- **confirmed**: the interval lies wholly on A's better side, and the difference exceeds the seed-to-seed noise
  (the larger standard deviation over seeds of the two arms' metric) where it is measured;
- **refuted**: the same on B's side (A is worse);
- **no difference within noise**: otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from faceattr.tasks.task import Task


@dataclass(frozen=True)
class Metric:
    name: str  # e.g. age_mae
    task: str
    higher_better: bool
    label: str


def metrics_for(tasks: Sequence[Task]) -> dict[str, Metric]:
    out: dict[str, Metric] = {}
    for t in tasks:
        if t.kind == "ordinal":
            if t.is_numeric:
                out[f"{t.name}_mae"] = Metric(f"{t.name}_mae", t.name, False, f"{t.name} MAE (years)")
            if t.group_labels:
                out[f"{t.name}_group_exact"] = Metric(f"{t.name}_group_exact", t.name, True, f"{t.name} group exact %")
        else:
            out[f"{t.name}_accuracy"] = Metric(f"{t.name}_accuracy", t.name, True, f"{t.name} accuracy %")
    return out


def per_face(rows: Any, metric: Metric, task: Task) -> np.ndarray:
    """The metric's per-face values (error in years, or 0/1 correctness) from a predictions table."""
    true = rows[f"{metric.task}_true"].to_numpy()
    if metric.name.endswith("_mae"):
        vals = np.asarray(task.values)
        return np.abs(rows[f"{metric.task}_value"].to_numpy() - vals[true])
    if metric.name.endswith("_group_exact"):
        if task.is_numeric:  # exact ages: both mapped to their groups
            vals = np.asarray(task.values)
            g_true = np.array([task.group_of(a) for a in vals[true]])
            g_pred = np.array([task.group_of(a) for a in rows[f"{metric.task}_value"].to_numpy()])
            return (g_true == g_pred).astype(float)
        return (rows[f"{metric.task}_index"].to_numpy() == true).astype(float)
    return (rows[f"{metric.task}_index"].to_numpy() == true).astype(float)


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, higher_better: bool, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of (A - B) oriented so that positive means A is better, with its 95 % paired-bootstrap interval."""
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"paired samples must be two equal 1-D arrays, got {a.shape} and {b.shape}")
    d = (a - b) if higher_better else (b - a)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))
    means = d[idx].mean(1)
    return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def verdict(diff: float, lo: float, hi: float, seed_noise: float | None) -> str:
    """The stated rule (module docstring)."""
    beyond = seed_noise is None or abs(diff) > seed_noise
    if lo > 0 and beyond:
        return "confirmed"
    if hi < 0 and beyond:
        return "refuted"
    return "no difference within noise"
