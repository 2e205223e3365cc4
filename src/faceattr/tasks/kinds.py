"""Task kinds as objects: each kind (ordinal, nominal) owns its head layer, its loss, the decoding of its outputs, its
metrics and its output columns, so that code handling tasks calls ``kind_of(task).method(...)`` instead of
branching on ``task.kind``. A new kind is one class registered in :data:`KINDS`.

Torch is imported only inside the layer and loss methods; decoding and columns are numpy (the runtime uses them
without torch), and scikit-learn is imported only by the metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from faceattr.registry import Registry
from faceattr.tasks.calibration import (
    INTERVAL_METHOD_SD,
    apply_class_calibration,
    conformal_interval,
    interval_for,
    interval_method,
    spread,
)
from faceattr.tasks.formulations import get_formulation
from faceattr.tasks.labels import MISSING

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from faceattr.tasks.task import Task

CS_LEVELS = tuple(range(11))


def ordinal_probs(out: np.ndarray, formulation: str, num_levels: int) -> np.ndarray:
    """N x K level probabilities implied by an ordinal head's outputs (see :mod:`faceattr.tasks.formulations`)."""
    return get_formulation(formulation).level_probs(out, num_levels)


def quantile_index(probs: np.ndarray, q: float) -> np.ndarray:
    """Index of the smallest level whose CDF reaches ``q``."""
    cdf = np.cumsum(probs / np.clip(probs.sum(-1, keepdims=True), 1e-12, None), -1)
    return np.minimum((cdf < q - 1e-9).sum(-1), probs.shape[-1] - 1)


class TaskKind:
    """What a kind of task does; see the module docstring. Methods take the task they act for."""

    name: str = ""

    def num_outputs(self, task: Task, formulation: str) -> int:
        raise NotImplementedError

    def make_layer(self, in_features: int, task: Task, formulation: str) -> nn.Module:
        raise NotImplementedError

    def loss(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        formulation: str,
        label_smoothing: float = 0.0,
        upper: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, int]:
        raise NotImplementedError

    def decode(
        self, out: np.ndarray, task: Task, formulation: str, coverage: float, calibration: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        raise NotImplementedError

    def metrics(self, task: Task, pred: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, Any]:
        raise NotImplementedError

    def attribute_fields(self, task: Task, decoded: dict[str, np.ndarray], i: int) -> dict[str, Any]:
        """Face ``i``'s answer: ``label``, ``probabilities`` and, for ordinal tasks, ``value`` and ``interval``."""
        raise NotImplementedError

    def columns(self, task: Task) -> list[str]:
        """The flat output columns after the label column ``<task>`` (CSV, Parquet)."""
        raise NotImplementedError


class NominalKind(TaskKind):
    """Unordered classes: K logits, cross-entropy, calibrated class probabilities, accuracy and macro-F1."""

    name = "nominal"

    def num_outputs(self, task: Task, formulation: str) -> int:
        return task.num_classes

    def make_layer(self, in_features: int, task: Task, formulation: str) -> nn.Module:
        from torch import nn

        return nn.Linear(in_features, task.num_classes)

    def loss(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        formulation: str,
        label_smoothing: float = 0.0,
        upper: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, int]:
        from faceattr.tasks.ordinal import cross_entropy_loss

        return cross_entropy_loss(logits, labels, label_smoothing)

    def decode(
        self, out: np.ndarray, task: Task, formulation: str, coverage: float, calibration: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        temp = float(((calibration or {}).get("temperature") or {}).get(task.name, 1.0))
        p = apply_class_calibration(out, temp, ((calibration or {}).get("bias") or {}).get(task.name))
        return {"probs": p, "index": p.argmax(-1)}

    def metrics(self, task: Task, pred: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, Any]:
        from sklearn.metrics import confusion_matrix, f1_score  # scikit-learn only for the metrics

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

    def attribute_fields(self, task: Task, decoded: dict[str, np.ndarray], i: int) -> dict[str, Any]:
        probs = {str(c): float(p) for c, p in zip(task.classes, decoded["probs"][i])}
        return {"label": str(task.classes[int(decoded["index"][i])]), "probabilities": probs}

    def columns(self, task: Task) -> list[str]:
        return [f"{task.name}_p_{c}" for c in task.labels]


class OrdinalKind(TaskKind):
    """Ordered levels: the head, loss and level distribution of the task's formulation (CORAL, OR-CNN, CORN,
    softmax, regression); the expected value, the median level and a (conformal) central interval; MAE, CS@k and
    group accuracy."""

    name = "ordinal"

    def num_outputs(self, task: Task, formulation: str) -> int:
        return get_formulation(formulation).num_outputs(task.num_classes)

    def make_layer(self, in_features: int, task: Task, formulation: str) -> nn.Module:
        return get_formulation(formulation).make_layer(in_features, task.num_classes)

    def loss(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        formulation: str,
        label_smoothing: float = 0.0,
        upper: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, int]:
        return get_formulation(formulation).loss(logits, labels, upper)

    def decode(
        self, out: np.ndarray, task: Task, formulation: str, coverage: float, calibration: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        p = ordinal_probs(out, formulation, task.num_classes)
        v = np.asarray(task.values)
        a = (1 - coverage) / 2
        expected = (p * v).sum(-1) / np.clip(p.sum(-1), 1e-12, None)
        if get_formulation(formulation).point_estimate:
            # a point estimate carries no distribution: its interval is the point itself
            return {
                "probs": p,
                "value": expected,
                "index": np.rint(np.clip(out[:, 0], 0, task.num_classes - 1)).astype(int),
                "low": expected,
                "high": expected,
            }
        q = interval_for(calibration, task.name, coverage) if task.is_numeric else None
        if q is not None:
            method = interval_method(calibration, task.name)
            # the face's own spread, only for the score that is scaled by it (per call on the prediction path)
            sd = (
                spread(p / np.clip(p.sum(-1, keepdims=True), 1e-12, None), v, expected)
                if method == INTERVAL_METHOD_SD
                else None
            )
            low, high = conformal_interval(expected, q, float(v[0]), float(v[-1]), method, sd)
        else:
            low, high = v[quantile_index(p, a)], v[quantile_index(p, 1 - a)]
        return {"probs": p, "value": expected, "index": quantile_index(p, 0.5), "low": low, "high": high}

    def metrics(self, task: Task, pred: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, Any]:
        from sklearn.metrics import confusion_matrix  # scikit-learn only for the metrics

        m = labels != MISSING
        out: dict[str, Any] = {"n": int(m.sum())}
        if not m.any():
            return out
        values = np.asarray(task.values)
        true_v, est = values[labels[m]], pred["value"][m]
        if task.is_numeric:
            err = np.abs(est - true_v)
            out["mae"] = float(err.mean())
            rerr = np.abs(np.rint(est) - true_v)
            out["cs"] = {str(k): float((rerr <= k).mean()) for k in CS_LEVELS}
            grouped = bool(task.groups)  # group figures only for the groups the task declares
            if grouped:
                g_true = np.array([task.group_of(a) for a in true_v])
                g_pred = np.array([task.group_of(a) for a in est])
                out["group_labels"] = list(task.group_labels)
        else:
            grouped = True
            g_true, g_pred = labels[m], pred["index"][m]
            out["mae_levels"] = float(np.abs(g_pred - g_true).mean())
            out["group_labels"] = [str(x) for x in task.levels]
            out["mae_value"] = float(np.abs(est - true_v).mean())
        if grouped:
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

    def attribute_fields(self, task: Task, decoded: dict[str, np.ndarray], i: int) -> dict[str, Any]:
        numeric = task.is_numeric
        value = float(decoded["value"][i])
        return {
            "label": str(round(value)) if numeric else str(task.levels[int(decoded["index"][i])]),
            "probabilities": {} if numeric else {str(c): float(p) for c, p in zip(task.levels, decoded["probs"][i])},
            "value": value,
            "interval": (float(decoded["low"][i]), float(decoded["high"][i])),
        }

    def columns(self, task: Task) -> list[str]:
        cols = [f"{task.name}_value", f"{task.name}_low", f"{task.name}_high"]
        return cols if task.is_numeric else [*cols, *(f"{task.name}_p_{c}" for c in task.labels)]


KINDS: Registry[TaskKind] = Registry("task kind")
KINDS.register("ordinal", OrdinalKind())
KINDS.register("nominal", NominalKind())


def kind_of(task: Task) -> TaskKind:
    """The object that implements ``task``'s kind."""
    return KINDS.get(task.kind)


def make_head(in_features: int, task: Task, formulation: str = "coral", dropout: float = 0.2) -> nn.Module:
    """A task's head: dropout, then its kind's layer."""
    from torch import nn

    return nn.Sequential(nn.Dropout(dropout), kind_of(task).make_layer(in_features, task, formulation))


def task_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    task: Task,
    formulation: str = "coral",
    label_smoothing: float = 0.0,
    upper: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """The loss of one task's head output, by its kind (and, for ordinal tasks, formulation); ``upper``: upper
    levels of interval-censored ordinal labels."""
    return kind_of(task).loss(logits, labels, formulation, label_smoothing, upper)
