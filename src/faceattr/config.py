"""Experiment configuration: frozen dataclasses, one YAML per experiment, ``key=value`` overrides.

The resolved configuration (after overrides) is saved with every run and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "utkface"           # utkface | fairface | manifest
    root: str = "../shared/data/utkface"
    split_file: str | None = None      # default: <root>/split.csv if present, else computed by the protocol rule
    labels: str | None = None          # manifest CSV (dataset: manifest)
    wide_labels: str | None = None     # FairFace: labels.csv of the wide set whose sources are forced into test
    tasks: list[dict[str, Any]] | None = None  # manifest: declared tasks
    image_size: int = 128
    max_train: int | None = None       # reduced budget: a seeded subset of the training split
    max_val: int | None = None
    cache_dir: str | None = None
    # more datasets trained together with this one, their labels mapped onto this one's tasks:
    # [{data: "fairface:DIR", label_map: {race: {"East Asian": Asian, ...}}}, ...] (see faceattr.data.combine)
    extra: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mobilenet_v2"
    shared_stages: int = 5
    ordinal_formulation: str = "coral"  # coral | binary | corn | softmax | regression (faceattr.formulations)
    dropout: float = 0.2
    pretrained: bool = True
    allow_download: bool = False
    init_from: str | None = None        # a faceattr checkpoint whose same-named, same-shaped weights start training


@dataclass(frozen=True)
class AugmentSettings:
    flip: bool = True
    scale: float = 0.10
    shift: float = 0.06
    rotate: float = 12.0
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12
    batch_size: int = 64
    eval_batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.3
    weighting: str = "uncertainty"     # uncertainty | equal | fixed | dwa | gradnorm | rlw
    weighting_lr: float = 0.025        # log-variances get their own learning rate, no weight decay
    fixed_weights: dict[str, float] | None = None
    tasks: list[str] | None = None     # train only these tasks (single-task networks); default all
    label_smoothing: float = 0.0
    seed: int = 0
    threads: int | None = None
    select_metric: str = "auto"        # checkpoint selection on validation; auto = sum of normalised task errors
    max_steps_per_epoch: int | None = None
    device: str = "auto"               # auto (a GPU when torch sees one) | cpu | cuda | cuda:N
    amp: bool = True                   # bf16 autocast on a GPU (never on the CPU)


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    out_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


def _build(cls: type, d: Mapping[str, Any], where: str) -> Any:
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(fields)
    if unknown:
        raise ConfigError(f"{where}: unknown settings {sorted(unknown)}; known: {sorted(fields)}")
    kwargs = {}
    for k, v in d.items():
        sub = _SECTIONS.get(k) if cls is ExperimentConfig else None
        kwargs[k] = _build(sub, v or {}, f"{where}.{k}") if sub else v
    return cls(**kwargs)


_SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "augment": AugmentSettings,
                              "train": TrainConfig}


def config_from_dict(d: Mapping[str, Any]) -> ExperimentConfig:
    return _build(ExperimentConfig, d, "config")


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def apply_overrides(d: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (values parsed as YAML) to a nested dict (copied)."""
    import copy
    d = copy.deepcopy(d)
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"override {o!r} is not of the form section.key=value")
        key, raw = o.split("=", 1)
        parts = key.strip().split(".")
        node = d
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {o!r}: {p} is not a section")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return d


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    d: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            d = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from e
    return config_from_dict(apply_overrides(d, overrides))


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), encoding="utf-8")
