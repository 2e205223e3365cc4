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

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"label": self.label}
        if self.value is not None:
            d["value"] = round(self.value, 2)
        if self.interval is not None:
            d["interval"] = [round(self.interval[0], 2), round(self.interval[1], 2)]
        if self.probabilities:
            d["probabilities"] = {k: round(v, 4) for k, v in self.probabilities.items()}
        return d


@dataclass
class FaceResult:
    attributes: dict[str, Attribute]
    box: tuple[float, float, float, float] | None = None
    score: float | None = None
    landmarks: dict[str, list[float]] | None = None

    def __getitem__(self, task: str) -> Attribute:
        return self.attributes[task]

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
