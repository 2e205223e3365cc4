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
from sklearn.metrics import confusion_matrix, f1_score

from faceattr.tasks.task import MISSING, Task

CS_LEVELS = tuple(range(11))


def is_exact_age(task: Task) -> bool:
    return task.is_numeric


def ordinal_metrics(task: Task, pred: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, Any]:
    m = labels != MISSING
    out: dict[str, Any] = {"n": int(m.sum())}
    if not m.any():
        return out
    values = np.asarray(task.values)
    true_v, est = values[labels[m]], pred["value"][m]
    if is_exact_age(task):
        err = np.abs(est - true_v)
        out["mae"] = float(err.mean())
        rerr = np.abs(np.rint(est) - true_v)
        out["cs"] = {str(k): float((rerr <= k).mean()) for k in CS_LEVELS}
        g_true = np.array([task.group_of(a) for a in true_v])
        g_pred = np.array([task.group_of(a) for a in est])
        out["group_labels"] = list(task.group_labels)
    else:
        g_true, g_pred = labels[m], pred["index"][m]
        out["mae_levels"] = float(np.abs(g_pred - g_true).mean())
        out["group_labels"] = [str(x) for x in task.levels]
        out["mae_value"] = float(np.abs(est - true_v).mean())
    out["group_exact"] = float((g_true == g_pred).mean())
    out["group_1off"] = float((np.abs(g_true - g_pred) <= 1).mean())
    k = len(out["group_labels"])
    out["group_confusion"] = confusion_matrix(g_true, g_pred, labels=list(range(k))).tolist()
    if "low" in pred:
        lo, hi = pred["low"][m], pred["high"][m]
        out["interval_coverage"] = float(((true_v >= lo) & (true_v <= hi)).mean())
        out["interval_width_median"] = float(np.median(hi - lo))
        out["interval_width_mean"] = float(np.mean(hi - lo))
    return out


def nominal_metrics(task: Task, pred: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, Any]:
    m = labels != MISSING
    out: dict[str, Any] = {"n": int(m.sum())}
    if not m.any():
        return out
    y, p = labels[m], pred["index"][m]
    k = task.num_classes
    out["accuracy"] = float((y == p).mean())
    if "probs" in pred:  # what the printed probabilities are worth (faceattr.tasks.calibration)
        from faceattr.tasks.calibration import brier, ece

        probs = np.asarray(pred["probs"])[m]
        out["ece"] = ece(probs, y)
        out["brier"] = brier(probs, y)
        out["mean_confidence"] = float(probs.max(1).mean())
    out["macro_f1"] = float(f1_score(y, p, labels=list(range(k)), average="macro", zero_division=0))
    out["confusion"] = confusion_matrix(y, p, labels=list(range(k))).tolist()
    out["classes"] = list(task.classes)
    return out


def task_metrics(task: Task, pred: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, Any]:
    return ordinal_metrics(task, pred, labels) if task.kind == "ordinal" else nominal_metrics(task, pred, labels)


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
