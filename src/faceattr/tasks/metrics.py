"""Evaluation metrics for heterogeneous attributes, computed from decoded predictions and true labels.

- exact-age ordinal tasks: MAE (years, on the expected value) and CS@k, the share of faces whose rounded
  estimate is within k years (k = 0..10);
- age groups: exact and 1-off accuracy, for grouped tasks directly and for exact ages mapped to the FairFace
  groups (both the estimate and the truth mapped);
- nominal tasks: accuracy, macro-F1 (scikit-learn) and the confusion matrix;
- everything again per race group and per gender group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from faceattr.tasks.kinds import kind_of
from faceattr.tasks.task import Task


def task_metrics(task: Task, pred: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, Any]:
    """One task's metrics, by its kind (:mod:`faceattr.tasks.kinds`)."""
    return kind_of(task).metrics(task, pred, labels)


def compute_metrics(
    tasks: Sequence[Task],
    preds: dict[str, dict[str, np.ndarray]],
    labels: dict[str, np.ndarray],
    breakdown: Sequence[str] = ("race", "gender"),
) -> dict[str, Any]:
    """Overall metrics per task, and the same per group of each ``breakdown`` task (by its true label)."""
    res: dict[str, Any] = {
        "overall": {t.name: task_metrics(t, preds[t.name], labels[t.name]) for t in tasks if t.name in preds}
    }
    by_name = {t.name: t for t in tasks}
    for b in breakdown:
        if b not in by_name or b not in labels:
            continue
        groups: dict[str, Any] = {}
        for gi, gname in enumerate(by_name[b].labels):
            m = labels[b] == gi
            if not m.any():
                continue
            groups[str(gname)] = {
                t.name: task_metrics(t, {k: v[m] for k, v in preds[t.name].items()}, labels[t.name][m])
                for t in tasks
                if t.name in preds
            }
        res[f"by_{b}"] = groups
    return res


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The few numbers a table row shows."""
    out: dict[str, float] = {}
    for name, m in metrics["overall"].items():
        for k in ("mae", "group_exact", "group_1off", "interval_hit", "accuracy", "macro_f1"):
            if k in m:
                out[f"{name}_{k}"] = m[k]
        if "cs" in m:
            out[f"{name}_cs5"] = m["cs"]["5"]
    return out


def selection_score(metrics: dict[str, Any]) -> float:
    """One number to pick the best epoch (lower is better): age MAE / 10 (or group error) + classification errors."""
    s = 0.0
    for m in metrics["overall"].values():
        if "mae" in m:
            s += m["mae"] / 10.0
        elif "group_exact" in m:
            s += 1 - m["group_exact"]
        elif "accuracy" in m:
            s += 1 - m["accuracy"]
    return s
