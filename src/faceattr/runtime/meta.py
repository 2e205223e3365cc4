"""The metadata that travels with a model's weights, as one typed, frozen, versioned object.

Like timm's pretrained config, :class:`ModelMeta` drives preprocessing (input size, mean/std: the one place faces
are normalised for the network, :meth:`ModelMeta.normalize`), decoding (tasks with their levels/classes, the ordinal
formulation) and alignment (a landmark template per detector). It is read from and written to the checkpoint's JSON
(and the ONNX file's ``faceattr`` property) in one place, validated when read: a broken field is a
:class:`MetaError`, not a ``KeyError`` somewhere later. Torch-free, so the onnxruntime path uses it too.

Fields the code does not interpret (the training config, data protocol, metrics, epoch, ...) travel in ``extra``
unchanged, so a checkpoint's JSON reads and writes back the same.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from faceattr.errors import FaceattrError
from faceattr.tasks.task import Task, tasks_from_json, tasks_to_json

META_FORMAT = "faceattr-checkpoint"
META_VERSION = 1


class MetaError(FaceattrError, ValueError):
    """Model metadata that is missing, malformed or from a newer faceattr."""


def three_channels(v: Any) -> tuple[float, float, float]:
    """Three channel values (mean or std) as floats; anything else is a :class:`MetaError`."""
    vals = [float(x) for x in v]
    if len(vals) != 3:
        raise MetaError(f"expected three channel values, got {v!r}")
    return vals[0], vals[1], vals[2]


@dataclass(frozen=True)
class Architecture:
    name: str = "mobilenet_v2"
    shared_stages: int = 5
    ordinal_formulation: str = "coral"
    dropout: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ModelMeta:
    tasks: tuple[Task, ...]
    architecture: Architecture
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    alignment: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # detector -> {"points": K x 2, ...}
    calibration: Mapping[str, Any] | None = None  # post-hoc calibration, when fitted
    weights_origin: str = "unknown"
    format_version: int = META_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)  # config, protocol, metrics, epoch, ...

    def __post_init__(self) -> None:
        if not self.tasks:
            raise MetaError("model metadata declares no tasks")
        if not (isinstance(self.input_size, int) and 16 <= self.input_size <= 4096):
            raise MetaError(f"model metadata: input_size {self.input_size!r} is not a size in pixels")
        for name, v in (("mean", self.mean), ("std", self.std)):
            if len(v) != 3 or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in v):
                raise MetaError(f"model metadata: {name} must be three numbers, got {v!r}")
        if any(s <= 0 for s in self.std):
            raise MetaError(f"model metadata: std must be positive, got {self.std!r}")

    # -- reading and writing -------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "model metadata") -> "ModelMeta":
        if not isinstance(d, Mapping):
            raise MetaError(f"{source}: metadata is not a mapping")
        if int(d.get("format_version", META_VERSION)) > META_VERSION:
            raise MetaError(f"{source}: metadata format {d.get('format_version')} is newer than this faceattr")
        missing = [k for k in ("tasks", "model", "input_size", "mean", "std") if k not in d]
        if missing:
            raise MetaError(f"{source}: metadata lacks {missing}")
        try:
            m = dict(d["model"])
            arch = Architecture(
                name=str(m.get("name", "mobilenet_v2")),
                shared_stages=int(m["shared_stages"]),
                ordinal_formulation=str(m.get("ordinal_formulation", "coral")),
                dropout=float(m.get("dropout", 0.0)),
            )
            known = {f.name for f in dataclasses.fields(cls)} | {"model", "format"}
            return cls(
                tasks=tasks_from_json(d["tasks"]),
                architecture=arch,
                input_size=int(d["input_size"]),
                mean=three_channels(d["mean"]),
                std=three_channels(d["std"]),
                alignment=dict(d.get("alignment") or {}),
                calibration=d.get("calibration"),
                weights_origin=str(d.get("weights_origin", "unknown")),
                format_version=int(d.get("format_version", META_VERSION)),
                extra={k: v for k, v in d.items() if k not in known},
            )
        except MetaError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise MetaError(f"{source}: malformed metadata ({type(e).__name__}: {e})") from e

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout (the same keys as ever: ``model`` for the architecture)."""
        d: dict[str, Any] = {"format": META_FORMAT, "format_version": self.format_version}
        d.update({k: v for k, v in self.extra.items() if k in ("dtype",)})
        d.update(
            {
                "tasks": tasks_to_json(self.tasks),
                "model": self.architecture.to_dict(),
                "input_size": self.input_size,
                "mean": list(self.mean),
                "std": list(self.std),
            }
        )
        d.update({k: v for k, v in self.extra.items() if k not in d})
        d["weights_origin"] = self.weights_origin
        if self.alignment:
            d["alignment"] = {k: dict(v) for k, v in self.alignment.items()}
        if self.calibration is not None:
            d["calibration"] = self.calibration
        return d

    def replace(self, **changes: Any) -> "ModelMeta":
        return dataclasses.replace(self, **changes)

    def with_extra(self, **items: Any) -> "ModelMeta":
        return dataclasses.replace(self, extra={**self.extra, **items})

    # -- what the code asks of it --------------------------------------------------------------------------------
    @property
    def formulation(self) -> str:
        return self.architecture.ordinal_formulation

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    def normalize(self, chips: np.ndarray) -> np.ndarray:
        """uint8 N x S x S x 3 face chips -> float32 N x 3 x S x S network input (numpy; torch has
        :func:`faceattr.data.transforms.normalize` with the same numbers)."""
        m = np.asarray(self.mean, np.float32).reshape(1, 3, 1, 1) * 255.0
        s = np.asarray(self.std, np.float32).reshape(1, 3, 1, 1) * 255.0
        x = np.asarray(chips).transpose(0, 3, 1, 2).astype(np.float32, order="C")  # one contiguous copy
        np.subtract(x, m, out=x)
        np.divide(x, s, out=x)  # in place: the same numbers as (x - m) / s, without two more copies
        return x

    def template(self, detector_name: str) -> np.ndarray:
        """The landmark template measured with ``detector_name`` (dlib-cnn uses dlib's; yuface, the same YuNet
        network compiled into libfacedetection, uses yunet's: their landmarks agree within a pixel)."""
        al = self.alignment
        same = {"dlib-cnn": "dlib", "yuface": "yunet", "yunet-ort": "yunet"}
        key = detector_name if detector_name in al else same.get(detector_name, detector_name)
        if key not in al:
            raise MetaError(
                f"the model has no alignment template for detector {detector_name!r} (has: {sorted(al)}); "
                f"run: faceattr calibrate --checkpoint ... --detector {detector_name}"
            )
        return np.asarray(al[key]["points"], np.float64)
