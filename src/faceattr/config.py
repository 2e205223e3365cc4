"""Experiment configuration: frozen dataclasses, one YAML per experiment, ``key=value`` overrides.

The resolved configuration (after overrides) is saved with every run and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from faceattr.errors import FaceattrError
from faceattr.tasks.task import Task, task_from_spec


class ConfigError(FaceattrError, ValueError):
    pass


def _range(
    name: str, v: float | int | None, lo: float | None = None, hi: float | None = None, optional: bool = False
) -> None:
    if v is None and optional:
        return
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"{name} must be a number, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ConfigError(
            f"{name} = {v!r} is out of range [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        )


def _choice(name: str, v: str, choices: Sequence[str]) -> None:
    if v not in choices:
        import difflib

        near = difflib.get_close_matches(str(v), choices, n=1)
        raise ConfigError(
            f"{name} = {v!r} is not one of {list(choices)}" + (f" (did you mean {near[0]!r}?)" if near else "")
        )


@dataclass(frozen=True)
class ExtraData:
    """One more dataset trained with the primary one (``data.extra``), its labels mapped onto the primary tasks
    (see :mod:`faceattr.data.combine`)."""

    data: str  # DATASET:PATH
    label_map: dict[str, dict[str, Any]] | None = None  # {task: {its label: the primary task's label}}
    split_file: str | None = None
    labels: str | None = None
    wide_labels: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.data, str) or ":" not in self.data:
            raise ConfigError(f"data.extra[].data must be DATASET:PATH, got {self.data!r}")
        lm = self.label_map or {}
        if not isinstance(lm, Mapping) or not all(isinstance(v, Mapping) for v in lm.values()):
            raise ConfigError(f"data.extra[].label_map must map each task to {{label: label}}, got {lm!r}")

    @property
    def dataset(self) -> str:
        return self.data.split(":", 1)[0]


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "utkface"  # utkface | fairface | manifest
    root: str = ""  # the dataset's folder (configs/*.yaml name the project's ../shared copy)
    split_file: str | None = None  # default: <root>/split.csv if present, else computed by the protocol rule
    labels: str | None = None  # manifest CSV (dataset: manifest)
    wide_labels: str | None = None  # FairFace: labels.csv of the wide set whose sources are forced into test
    tasks: tuple[Task, ...] | None = None  # manifest: declared tasks (faceattr.tasks.task.task_from_spec)
    image_size: int = 128
    max_train: int | None = None  # reduced budget: a seeded subset of the training split
    max_val: int | None = None
    cache_dir: str | None = None
    # more datasets trained together with this one, their labels mapped onto this one's tasks:
    # [{data: "fairface:DIR", label_map: {race: {"East Asian": Asian, ...}}}, ...] (see faceattr.data.combine)
    extra: tuple[ExtraData, ...] | None = None

    def __post_init__(self) -> None:
        _choice("data.dataset", self.dataset, ("utkface", "fairface", "manifest"))
        _range("data.image_size", self.image_size, 16, 1024)
        _range("data.max_train", self.max_train, 1, optional=True)
        _range("data.max_val", self.max_val, 1, optional=True)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mobilenet_v2"
    shared_stages: int = 5
    ordinal_formulation: str = "coral"  # coral | binary | corn | softmax | regression (faceattr.tasks.formulations)
    dropout: float = 0.2
    pretrained: bool = True
    allow_download: bool = False
    init_from: str | None = None  # a faceattr checkpoint whose same-named, same-shaped weights start training

    def __post_init__(self) -> None:
        from faceattr.tasks.formulations import list_formulations

        _choice("model.name", self.name, ("mobilenet_v2",))
        _range("model.shared_stages", self.shared_stages, 1, 7)
        _choice("model.ordinal_formulation", self.ordinal_formulation, list_formulations())
        _range("model.dropout", self.dropout, 0.0, 0.95)


@dataclass(frozen=True)
class AugmentSettings:
    """Batch augmentation (``faceattr.data.dataset.augment``)."""

    flip: bool = True
    scale: float = 0.10  # zoom in/out by up to 10 %
    shift: float = 0.06  # translate by up to 6 % of the side
    rotate: float = 12.0  # degrees
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25

    def __post_init__(self) -> None:
        for k in ("scale", "shift", "brightness", "contrast", "saturation"):
            _range(f"augment.{k}", getattr(self, k), 0.0, 0.9)
        _range("augment.rotate", self.rotate, 0.0, 180.0)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12
    batch_size: int = 64
    eval_batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.3
    weighting: str = "uncertainty"  # uncertainty | equal | fixed | dwa | gradnorm | rlw
    weighting_lr: float = 0.025  # log-variances get their own learning rate, no weight decay
    fixed_weights: dict[str, float] | None = None
    tasks: list[str] | None = None  # train only these tasks (single-task networks); default all
    label_smoothing: float = 0.0
    seed: int = 0
    threads: int | None = None
    select_metric: str = "auto"  # checkpoint selection on validation: the sum of normalised task errors
    # (the only choice; kept so older configs load)
    max_steps_per_epoch: int | None = None
    device: str = "auto"  # auto (a GPU when torch sees one) | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on a GPU (never on the CPU)

    def __post_init__(self) -> None:
        _range("train.epochs", self.epochs, 1, 10_000)
        _range("train.batch_size", self.batch_size, 1)
        _range("train.eval_batch_size", self.eval_batch_size, 1)
        _range("train.lr", self.lr, 1e-12, 10.0)
        _range("train.weight_decay", self.weight_decay, 0.0, 10.0)
        _range("train.warmup_epochs", self.warmup_epochs, 0.0, float(self.epochs))
        _choice("train.weighting", self.weighting, WEIGHTING_NAMES)
        _range("train.weighting_lr", self.weighting_lr, 0.0, 10.0)
        if self.weighting == "fixed" and not self.fixed_weights:
            raise ConfigError("train.weighting = fixed needs train.fixed_weights: {task: weight, ...}")
        for k, w in (self.fixed_weights or {}).items():
            _range(f"train.fixed_weights.{k}", w, 0.0)
        _range("train.label_smoothing", self.label_smoothing, 0.0, 0.5)
        _range("train.seed", self.seed, 0)
        _range("train.threads", self.threads, 1, 1024, optional=True)
        _choice("train.select_metric", self.select_metric, ("auto",))
        _range("train.max_steps_per_epoch", self.max_steps_per_epoch, 1, optional=True)
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"train.device = {self.device!r}: choose auto, cpu, cuda or cuda:N")


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


WEIGHTING_NAMES = ("uncertainty", "equal", "fixed", "dwa", "gradnorm", "rlw")


def _coerce(name: str, typ: str, v: Any) -> Any:
    """A YAML value checked against the field's declared type; numbers written as text (PyYAML reads ``1e-3`` as a
    string) become numbers, an integral float becomes an int."""
    optional = "None" in typ
    base = typ.replace("| None", "").strip()
    if v is None:
        if optional:
            return None
        raise ConfigError(f"{name} may not be empty")
    if base == "bool":
        if isinstance(v, bool):
            return v
        raise ConfigError(f"{name} must be true or false, got {v!r}")
    if base in ("int", "float"):
        if isinstance(v, bool):
            raise ConfigError(f"{name} must be a number, got {v!r}")
        if isinstance(v, str):
            try:
                v = float(v.strip())
            except ValueError:
                raise ConfigError(f"{name} must be a number, got {v!r}") from None
        if not isinstance(v, (int, float)):
            raise ConfigError(f"{name} must be a number, got {type(v).__name__}")
        if base == "int":
            if isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
                raise ConfigError(f"{name} must be a whole number, got {v!r}")
            return int(v)
        return float(v)
    if base == "str":
        if isinstance(v, (str, int, float)) and not isinstance(v, bool):
            return str(v)
        raise ConfigError(f"{name} must be text, got {type(v).__name__}")
    if base.startswith("list") and not isinstance(v, list):
        raise ConfigError(f"{name} must be a list, got {type(v).__name__}")
    if base.startswith("dict") and not isinstance(v, Mapping):
        raise ConfigError(f"{name} must be a mapping, got {type(v).__name__}")
    return v


def _build(cls: type, d: Mapping[str, Any], where: str) -> Any:
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(fields)
    if unknown:
        import difflib

        hints = [
            f"{u} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(u, fields, n=1)) else u
            for u in sorted(unknown)
        ]
        raise ConfigError(f"{where}: unknown settings {hints}; known: {sorted(fields)}")
    kwargs = {}
    for k, v in d.items():
        if cls is DataConfig and k == "tasks" and v is not None:
            if not isinstance(v, (list, tuple)):
                raise ConfigError(f"{where}.tasks must be a list of declared tasks, got {type(v).__name__}")
            try:
                kwargs[k] = tuple(t if isinstance(t, Task) else task_from_spec(t) for t in v)
            except ValueError as e:
                raise ConfigError(f"{where}.tasks: {e}") from e
            continue
        if cls is DataConfig and k == "extra" and v is not None:
            if not isinstance(v, (list, tuple)):
                raise ConfigError(f"{where}.extra must be a list of datasets, got {type(v).__name__}")
            kwargs[k] = tuple(_build(ExtraData, e, f"{where}.extra[{i}]") for i, e in enumerate(v))
            continue
        sub = _SECTIONS.get(k) if cls is ExperimentConfig else None
        kwargs[k] = (
            _build(sub, v or {}, f"{where}.{k}")
            if sub
            else _coerce(f"{where}.{k}".removeprefix("config."), str(fields[k].type), v)
        )
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from e


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "augment": AugmentSettings,
    "train": TrainConfig,
}


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
        if not isinstance(d, dict):
            raise ConfigError(
                f"{p}: an experiment config is a mapping (name:, data:, model:, train:), not a {type(d).__name__}"
            )
    return config_from_dict(apply_overrides(d, overrides))


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    from faceattr.safeio import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
