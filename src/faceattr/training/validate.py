"""Validation during training: the metrics of the network on the validation split (under
``torch.inference_mode``), sharded across processes under torchrun. Evaluation of a finished model on a protocol's
test split is :mod:`faceattr.evidence.evaluate`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from faceattr.data.combine import hi_column
from faceattr.data.dataset import TensorDataset
from faceattr.tasks.decode import decode_outputs
from faceattr.tasks.metrics import compute_metrics
from faceattr.tasks.task import MISSING, Task
from faceattr.training.distributed import (
    DistContext,
    gather_rows,
    shard_range,
)
from faceattr.training.inference import predict_outputs


def validate(
    model: nn.Module,
    data: TensorDataset,
    tasks: Sequence[Task],
    formulation: str,
    batch_size: int = 256,
    breakdown: Sequence[str] = ("race", "gender"),
    ctx: DistContext | None = None,
) -> dict[str, Any]:
    """Metrics of ``model`` on ``data`` (under ``torch.inference_mode``); under several processes each runs
    its share of the images and all get the metrics of the whole."""
    if ctx is not None and ctx.active:
        raw = gather_rows(predict_outputs(model, data.rows(*shard_range(len(data), ctx)), batch_size), ctx)
    else:
        raw = predict_outputs(model, data, batch_size)
    preds = decode_outputs(raw, tasks, formulation)
    metrics = compute_metrics([t for t in tasks], preds, data.exact_labels(), breakdown)
    cols = {n: j for j, n in enumerate(data.task_names)}
    for t in tasks:  # interval-censored labels (joint training): how often the estimate falls in the interval
        if hi_column(t.name) not in cols or t.name not in metrics["overall"]:
            continue
        lo, hi = data.labels[:, cols[t.name]], data.labels[:, cols[hi_column(t.name)]]
        cens = (lo != MISSING) & (hi != lo)
        if cens.any():
            idx = preds[t.name]["index"][cens]
            metrics["overall"][t.name]["interval_hit"] = float(((idx >= lo[cens]) & (idx <= hi[cens])).mean())
            metrics["overall"][t.name]["interval_n"] = int(cens.sum())
    return metrics
