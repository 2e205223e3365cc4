"""From a data setting (``utkface:DIR``, ``fairface:DIR``, ``manifest:CSV``) to the samples of one split."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from faceattr.config import DataConfig
from faceattr.data.cache import default_cache_dir
from faceattr.data.readers import (
    DataError,
    SampleTable,
    is_fairface_official,
    read_fairface,
    read_manifest,
    read_utkface,
    tasks_from_spec,
    utkface_image_dir,
)
from faceattr.data.spec import DATASETS
from faceattr.data.splits import (
    fairface_official_protocol,
    fairface_protocol,
    paplham_protocol,
    read_split,
    split_of,
    utkface_protocol,
    write_split,
)
from faceattr.tasks.task import Task, fairface_tasks, utkface_tasks

log = logging.getLogger(__name__)


def _protocol(cfg: DataConfig) -> pd.DataFrame:
    """The split table: the given file, ``<root>/split.csv``, or computed by the protocol rule (and cached)."""
    root = Path(cfg.root)
    candidates = [Path(cfg.split_file)] if cfg.split_file else [root / "split.csv"]
    if cfg.dataset == "utkface" and not cfg.split_file:
        candidates.append(utkface_image_dir(root).parent / "split.csv")
    for c in candidates:
        if c.is_file():
            return read_split(c)
    if cfg.split_file:
        raise DataError(f"split file not found: {cfg.split_file}")
    cache = Path(cfg.cache_dir or default_cache_dir())
    # the wide set's sources change the FairFace split: a split computed with other wide labels is another file
    wide = str(Path(cfg.wide_labels).resolve()) if cfg.wide_labels else ""
    key = hashlib.sha256(f"{root.resolve()}|{wide}".encode()).hexdigest()[:12]
    cached = cache / f"split-{cfg.dataset}-{key}.csv"
    if cached.is_file():
        return read_split(cached)
    log.info("no split file for %s: computing the protocol from the raw folder", root)
    if cfg.dataset in ("utkface", "fairface"):
        df = compute_protocol(cfg.dataset, root, cfg.wide_labels)
    else:
        raise DataError("a manifest without a split column needs a split_file")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        write_split(df, cached)
    except OSError:
        pass
    return df.astype(str)


def compute_protocol(
    dataset: str, root: str | Path, wide_labels: str | Path | None = None, protocol: str | None = None
) -> pd.DataFrame:
    """The evaluation protocol's split table computed from a raw folder (``faceattr split``; the same rule the
    shipped split files were made with). FairFace: the sources of the wide set (``wide_labels``, default
    ``<root>/../fairface-wide/labels.csv`` when present) always go to test. ``protocol``: ``paplham:K`` for UTKFace
    in Paplham et al.'s benchmark, split K (:func:`faceattr.data.splits.paplham_protocol`)."""
    if protocol:
        name, _, k = protocol.partition(":")
        if dataset != "utkface" or name != "paplham" or not k.isdigit():
            raise DataError(f"protocol {protocol!r}: the published protocol is paplham:0 ... paplham:4, for utkface")
        return paplham_protocol(root, int(k))
    if dataset == "utkface":
        return utkface_protocol(root)
    if dataset == "fairface":
        wide = Path(wide_labels) if wide_labels else Path(root).parent / "fairface-wide" / "labels.csv"
        if is_fairface_official(root):
            return fairface_official_protocol(root, wide if wide.is_file() else None)
        return fairface_protocol(root, wide if wide.is_file() else None)
    raise DataError(f"no protocol for dataset {dataset!r}: choose utkface or fairface")


def dataset_tasks(cfg: DataConfig) -> tuple[Task, ...]:
    """The tasks a dataset config declares, without reading the data."""
    if cfg.dataset == "utkface":
        return utkface_tasks()
    if cfg.dataset == "fairface":
        return fairface_tasks()
    if cfg.dataset == "manifest" and cfg.tasks:
        return tasks_from_spec(cfg.tasks)
    raise DataError(f"dataset {cfg.dataset!r}: no declared tasks (choose from {DATASETS}; a manifest needs data.tasks)")


def read_table(cfg: DataConfig) -> SampleTable:
    if cfg.dataset == "utkface":
        return read_utkface(cfg.root)
    if cfg.dataset == "fairface":
        return read_fairface(cfg.root, cfg.labels)
    if cfg.dataset == "manifest":
        if not cfg.labels or not cfg.tasks:
            raise DataError("dataset 'manifest' needs data.labels (the CSV) and data.tasks (the declared tasks)")
        return read_manifest(cfg.labels, tasks_from_spec(cfg.tasks), image_root=cfg.root)
    raise DataError(f"unknown dataset {cfg.dataset!r}; choose from {DATASETS}")


def load_split(
    cfg: DataConfig, split: str, limit: int | None = None, seed: int = 0, table: SampleTable | None = None
) -> SampleTable:
    """Samples of ``split`` (train/val/test/all) under the dataset's protocol; ``limit`` draws a seeded subset.
    ``table``: the whole dataset as already read by :func:`read_table` (saves reading it again per split)."""
    table = table if table is not None else read_table(cfg)
    if split != "all":
        if cfg.dataset == "manifest" and "split" in table.frame.columns and not cfg.split_file:
            mask = table.frame["split"] == split
        elif cfg.dataset == "manifest" and not cfg.split_file:
            import hashlib as _h

            splits = [
                split_of(_h.sha256(Path(p).read_bytes()).hexdigest()) if Path(p).is_file() else "missing"
                for p in table.frame["path"]
            ]
            mask = pd.Series(splits) == split
        else:
            proto = _protocol(cfg)
            files = set(proto.loc[proto["split"] == split, "file"])
            mask = table.frame["file"].isin(files)
        table = table.subset(mask.to_numpy())
        if len(table) == 0:
            raise DataError(f"{cfg.dataset}:{cfg.root}: no samples in split {split!r}")
    return sample(table, limit, seed)


def sample(table: SampleTable, limit: int | None, seed: int = 0) -> SampleTable:
    """A seeded subset of ``limit`` samples in their original order (the table itself when it is not larger)."""
    if limit is None or len(table) <= limit:
        return table
    idx = np.random.default_rng(seed).choice(len(table), size=limit, replace=False)
    return table.subset(np.isin(np.arange(len(table)), idx))


def load_train_val(cfg: DataConfig, seed: int = 0) -> tuple[SampleTable, SampleTable]:
    """Training and validation samples; with ``cfg.extra`` the extra datasets' own train/val splits are added,
    their labels mapped onto this dataset's tasks (:mod:`faceattr.data.combine`)."""
    whole = read_table(cfg)
    train = load_split(cfg, "train", cfg.max_train, seed, whole)
    val = load_split(cfg, "val", cfg.max_val, seed, whole)
    if not cfg.extra:
        return train, val
    from faceattr.data.combine import concat, extra_configs, map_to_tasks, with_exact_columns  # noqa: PLC0415

    trains, vals = [with_exact_columns(train)], [with_exact_columns(val)]
    for ecfg, label_map in extra_configs(cfg):
        w = read_table(ecfg)
        trains.append(map_to_tasks(load_split(ecfg, "train", ecfg.max_train, seed, w), train.tasks, label_map))
        vals.append(map_to_tasks(load_split(ecfg, "val", ecfg.max_val, seed, w), train.tasks, label_map))
        log.info("extra dataset %s: %d train / %d val samples", ecfg.root, len(trains[-1]), len(vals[-1]))
    return concat(trains), concat(vals)
