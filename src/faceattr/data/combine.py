"""Training on several datasets at once: each extra dataset's labels mapped onto the primary dataset's tasks.

A task of the extra dataset feeds the primary task of the same name:

* nominal: each class goes to the primary class named in ``label_map[task]`` or, without an entry, to the
  class of the same name (case-insensitive); a class with neither is an error that names it (never a silent drop).
* ordinal: a level of the same name maps to itself; a range (``"20-29"``, ``"(25, 32)"``, ``"more than 70"``)
  on a primary task with numeric levels (exact ages) becomes an *interval-censored* label: lowest and highest
  primary level inside the range, kept as ``<task>`` and ``<task>@hi`` columns; the ordinal losses learn only
  the "is the age > k?" sub-problems the interval decides (see :mod:`faceattr.tasks.ordinal`).

A task the extra dataset does not have is missing for its samples (masked in the losses).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from faceattr.config import DataConfig
from faceattr.data.readers import DataError, ReadReport, SampleTable
from faceattr.data.spec import parse_data_spec
from faceattr.tasks.task import MISSING, Task

log = logging.getLogger(__name__)

HI = "@hi"


def hi_column(task: str) -> str:
    return f"{task}{HI}"


def parse_range(label: Any) -> tuple[float, float] | None:
    """``"20-29"`` / ``"(25, 32)"`` -> (20, 29); ``"more than 70"`` -> (71, inf); ``"35"`` -> (35, 35); else None."""
    s = str(label).strip().lower()
    m = re.fullmatch(r"\(?\s*(\d+(?:\.\d+)?)\s*[-,]\s*(\d+(?:\.\d+)?)\s*\)?", s)
    if m:
        return float(m.group(1)), float(m.group(2))
    m = re.fullmatch(r"(?:more than|over|>)\s*(\d+)", s)
    if m:
        return float(m.group(1)) + 1, math.inf
    m = re.fullmatch(r"\d+(?:\.\d+)?", s)
    if m:
        return float(s), float(s)
    return None


def level_map(
    src: Task, dst: Task, overrides: Mapping[str, Any] | None = None, strict: bool = True
) -> dict[int, tuple[int, int]]:
    """For every label index of ``src``: the (lower, upper) label index of ``dst`` it maps to.

    ``strict``: raise :class:`DataError` naming every source label that cannot be mapped (training); else leave
    those labels out of the result (evaluation, where they count as missing)."""
    overrides = {str(k): v for k, v in (overrides or {}).items()}
    out: dict[int, tuple[int, int]] = {}
    bad: list[str] = []
    dst_names = {str(c).lower(): i for i, c in enumerate(dst.labels)}
    numeric = dst.kind == "ordinal" and all(isinstance(v, (int, float)) for v in dst.levels)
    # a label map that names a label neither side has is a typo, whatever ``strict`` says
    src_names = {str(c) for c in src.labels}
    typos = sorted(k for k in overrides if k not in src_names)
    if typos:
        raise DataError(
            f"label map for {dst.name!r}: {typos} are not labels of the data (it has {sorted(src_names)[:12]})"
        )
    wrong = sorted(
        str(v)
        for v in overrides.values()
        if str(v).lower() not in dst_names and not (numeric and parse_range(v) is not None)
    )
    if wrong:
        raise DataError(
            f"label map for {dst.name!r}: {wrong} are not labels of the model (it has "
            f"{list(map(str, dst.labels))[:12]})"
        )
    for i, lab in enumerate(src.labels):
        target = overrides.get(str(lab), lab)
        j = dst_names.get(str(target).lower())
        if j is not None:
            out[i] = (j, j)
            continue
        rng = parse_range(target) if numeric else None
        if rng is not None:
            vals = np.asarray(dst.values)
            inside = np.flatnonzero((vals >= rng[0]) & (vals <= rng[1]))
            if len(inside):
                out[i] = (int(inside[0]), int(inside[-1]))
                continue
        bad.append(str(lab))
    if bad and strict:
        raise DataError(
            f"task {dst.name!r}: labels {bad} of the extra dataset match no {dst.name} label "
            f"{list(map(str, dst.labels))[:12]}; give them in data.extra[].label_map.{dst.name}"
        )
    return out


def map_to_tasks(
    table: SampleTable, tasks: Sequence[Task], label_map: Mapping[str, Mapping[str, Any]] | None = None
) -> SampleTable:
    """``table`` with its label columns re-expressed in ``tasks`` (+ ``<task>@hi`` for interval labels)."""
    label_map = label_map or {}
    unknown = set(label_map) - {t.name for t in tasks}
    if unknown:
        raise DataError(f"label_map names tasks {sorted(unknown)} that the model does not have")
    src_by = {t.name: t for t in table.tasks}
    df = table.frame[[c for c in ("path", "file") if c in table.frame]].copy()
    df["source"] = table.name or "extra"
    for t in tasks:
        lo = np.full(len(table), MISSING, np.int64)
        hi = lo.copy()
        if t.name in src_by:
            m = level_map(src_by[t.name], t, label_map.get(t.name))
            y = table.frame[t.name].to_numpy(np.int64)
            for i, (a, b) in m.items():
                lo[y == i], hi[y == i] = a, b
        df[t.name] = lo
        if t.kind == "ordinal":
            df[hi_column(t.name)] = hi
    return SampleTable(df.reset_index(drop=True), tuple(tasks), table.report, table.name)


def with_exact_columns(table: SampleTable) -> SampleTable:
    """The primary dataset in the same shape: ``<task>@hi`` equal to ``<task>`` for its ordinal tasks."""
    df = table.frame.copy()
    df["source"] = table.name or "primary"
    for t in table.tasks:
        if t.kind == "ordinal" and hi_column(t.name) not in df:
            df[hi_column(t.name)] = df[t.name]
    return SampleTable(df, table.tasks, table.report, table.name)


def concat(tables: Sequence[SampleTable]) -> SampleTable:
    first = tables[0]
    report = ReadReport(
        source=" + ".join(t.report.source for t in tables),
        rows_read=sum(t.report.rows_read for t in tables),
        kept=sum(len(t) for t in tables),
    )
    for t in tables:
        for reason, items in t.report.skipped.items():
            report.skipped.setdefault(reason, []).extend(items)
        for what, n in t.report.notes.items():
            report.note(what, n)
    frame = pd.concat([t.frame for t in tables], ignore_index=True, sort=False)
    return SampleTable(frame, first.tasks, report, "+".join(t.name for t in tables))


def extra_configs(cfg: DataConfig) -> list[tuple[DataConfig, dict[str, Any]]]:
    """The extra datasets of ``cfg`` as (data config, label map); image size, budget and cache follow ``cfg``."""
    out = []
    for e in cfg.extra or ():
        base = dataclasses.replace(
            cfg, extra=None, split_file=e.split_file, labels=e.labels, wide_labels=e.wide_labels, tasks=None
        )
        out.append((parse_data_spec(e.data, base), dict(e.label_map or {})))
    return out
