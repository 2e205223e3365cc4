"""Typed results: a photo's faces and each face's attributes, with their JSON form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Attribute:
    name: str
    kind: str
    label: str  # predicted class / level (ordinal: its median level)
    probabilities: dict[str, float] = field(default_factory=dict)
    value: float | None = None  # ordinal: expected value (e.g. age in years)
    interval: tuple[float, float] | None = None  # ordinal: central interval of the predicted distribution

    def __repr__(self) -> str:
        parts = [f"{self.label!r}"]
        if self.value is not None:
            parts.append(f"value={self.value:.1f}")
        if self.interval is not None:
            parts.append(f"interval=({self.interval[0]:.1f}, {self.interval[1]:.1f})")
        if self.probabilities and self.value is None:
            top = max(self.probabilities.values())
            parts.append(f"p={top:.2f}")
        return f"{self.name}({', '.join(parts)})"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"label": self.label}
        if self.value is not None:
            d["value"] = round(self.value, 2)
        if self.interval is not None:
            d["interval"] = [round(self.interval[0], 2), round(self.interval[1], 2)]
        if self.probabilities:
            d["probabilities"] = {k: round(v, 4) for k, v in self.probabilities.items()}
        return d


def attribute_columns(attributes: dict[str, Attribute]) -> dict[str, Any]:
    """A face's attributes as flat columns, the one flattening of CSV, Parquet and records: per task ``<task>`` (the
    label), ``<task>_value``, ``<task>_low``/``_high`` (the interval) and ``<task>_p_<class>``."""
    r: dict[str, Any] = {}
    for name, a in attributes.items():
        r[name] = a.label
        if a.value is not None:
            r[f"{name}_value"] = a.value
        if a.interval is not None:
            r[f"{name}_low"], r[f"{name}_high"] = a.interval
        for c, pr in a.probabilities.items():
            r[f"{name}_p_{c}"] = pr
    return r


@dataclass
class FaceResult:
    attributes: dict[str, Attribute]
    box: tuple[float, float, float, float] | None = None
    score: float | None = None
    landmarks: dict[str, list[float]] | None = None

    def __getitem__(self, task: str) -> Attribute:
        return self.attributes[task]

    def __getattr__(self, task: str) -> Attribute:
        """``face.age`` is ``face["age"]``: every task of the model is an attribute."""
        attributes = self.__dict__.get("attributes")
        if attributes is not None and task in attributes:
            return attributes[task]
        raise AttributeError(f"{type(self).__name__} has no attribute {task!r}")

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self.attributes})

    def __repr__(self) -> str:
        box = "" if self.box is None else f"box=({', '.join(f'{v:.0f}' for v in self.box)}), "
        return f"FaceResult({box}{', '.join(repr(a) for a in self.attributes.values())})"

    def to_record(self, index: int | None = None) -> dict[str, Any]:
        """One flat row: ``face`` (index), box corners, score, and per task ``<task>``, ``<task>_value``,
        ``<task>_low``/``_high`` (interval) and ``<task>_p_<class>`` (probabilities)."""
        r: dict[str, Any] = {}
        if index is not None:
            r["face"] = index
        if self.box is not None:
            r.update(zip(("x0", "y0", "x1", "y1"), (float(v) for v in self.box)))
            r["score"] = None if self.score is None else float(self.score)
        r.update(attribute_columns(self.attributes))
        return r

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.box is not None:
            d["box"] = [round(float(v), 1) for v in self.box]
            d["score"] = round(float(self.score or 0.0), 4)
            d["landmarks"] = self.landmarks
        d.update({k: a.to_dict() for k, a in self.attributes.items()})
        return d


@dataclass
class PhotoResult:
    source: str
    width: int
    height: int
    faces: list[FaceResult]
    message: str = ""
    error: str = ""  # set (and no faces) when the image could not be used; see Predictor.predict_many

    def __repr__(self) -> str:
        if self.error:
            return f"PhotoResult({self.source!r}, error={self.error!r})"
        return f"PhotoResult({self.source!r}, {self.width}x{self.height}, {len(self.faces)} face(s))"

    def to_records(self) -> list[dict[str, Any]]:
        """One flat dict per face (:meth:`FaceResult.to_record`) with ``file``; a photo without a face or with an
        error gives one row with ``message`` or ``error``."""
        if self.error or not self.faces:
            key = "error" if self.error else "message"
            return [{"file": self.source, key: self.error or self.message or "no face found"}]
        return [{"file": self.source, **f.to_record(i)} for i, f in enumerate(self.faces)]

    def to_pandas(self) -> Any:
        """:meth:`to_records` as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.DataFrame.from_records(self.to_records())

    def to_dict(self) -> dict[str, Any]:
        if self.error:
            return {"file": self.source, "error": self.error}
        d: dict[str, Any] = {
            "file": self.source,
            "width": self.width,
            "height": self.height,
            "num_faces": len(self.faces),
            "faces": [f.to_dict() for f in self.faces],
        }
        if self.message:
            d["message"] = self.message
        return d
