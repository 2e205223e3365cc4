"""Data specs: ``DATASET:PATH`` strings as the CLI takes them, turned into a :class:`~faceattr.config.DataConfig`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from faceattr.config import DataConfig
from faceattr.data.readers import DataError

DATASETS = ("utkface", "fairface", "manifest")


def parse_data_spec(spec: str, base: DataConfig | None = None) -> DataConfig:
    """``utkface:DIR`` / ``fairface:DIR`` / ``manifest:CSV`` -> DataConfig (other settings from ``base``)."""
    if ":" not in spec:
        raise DataError(f"data {spec!r}: expected DATASET:PATH with DATASET one of {DATASETS}")
    kind, path = spec.split(":", 1)
    if kind not in DATASETS:
        raise DataError(f"data {spec!r}: unknown dataset {kind!r}; choose from {DATASETS}")
    base = base or DataConfig()
    if kind == "manifest":
        return dataclasses.replace(base, dataset=kind, labels=path, root=str(Path(path).parent))
    return dataclasses.replace(base, dataset=kind, root=path)
