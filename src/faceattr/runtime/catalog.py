"""The shipped models: names, files with their SHA-256, licence, training data, origin and the figures measured on
their default path (``weights/models.json``; its ``figures`` are generated from ``results/`` by
``scripts/make_docs.py``). Torch-free and light: ``faceattr models`` and ``--help`` read it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faceattr.errors import UsageError

WEIGHTS_DIR = Path(__file__).parent.parent / "weights"
CATALOG = WEIGHTS_DIR / "models.json"


@dataclass(frozen=True)
class ShippedModel:
    name: str
    summary: str
    licence: str
    licence_detail: str
    commercial_use: bool
    trained_on: tuple[str, ...]
    origin: str
    files: dict[str, dict[str, str]]  # runtime -> {"file", "sha256"}
    evaluations: dict[str, Any] = field(default_factory=dict)  # name -> {"file": results/..., "keys": [...]}
    figures: dict[str, Any] = field(default_factory=dict)  # evaluation name -> {metric: value}

    def path(self, runtime: str) -> Path:
        if runtime not in self.files:
            raise UsageError(f"model {self.name!r} has no {runtime!r} file; it has {sorted(self.files)}")
        return WEIGHTS_DIR / self.files[runtime]["file"]

    def metadata(self) -> dict[str, Any]:
        """The weights' metadata (the ``.json`` beside the torch checkpoint): tasks, input size, ..."""
        side = self.path("torch").with_suffix(".json")
        return dict(json.loads(side.read_text(encoding="utf-8")))

    def tasks(self) -> list[dict[str, Any]]:
        """Each task with its classes (nominal), or its levels' range or names (ordinal)."""
        out: list[dict[str, Any]] = []
        for t in self.metadata()["tasks"]:
            d: dict[str, Any] = {"name": t["name"], "kind": t["kind"]}
            if t["kind"] == "nominal":
                d["classes"] = [str(c) for c in t["classes"]]
            elif all(isinstance(v, (int, float)) for v in t["levels"]):
                d["range"] = [t["levels"][0], t["levels"][-1]]
            else:
                d["levels"] = [str(v) for v in t["levels"]]
            out.append(d)
        return out

    def to_dict(self) -> dict[str, Any]:
        meta = self.metadata()
        return {
            "name": self.name,
            "default": self.name == default_name(),
            "summary": self.summary,
            "tasks": self.tasks(),
            "input_size": meta["input_size"],
            "licence": self.licence,
            "licence_detail": self.licence_detail,
            "commercial_use": self.commercial_use,
            "trained_on": list(self.trained_on),
            "origin": self.origin,
            "runtimes": sorted(self.files),
            "figures": self.figures,
        }


@functools.cache
def _catalog() -> dict[str, Any]:
    return dict(json.loads(CATALOG.read_text(encoding="utf-8")))


def list_shipped() -> list[ShippedModel]:
    """Every model shipped in the package, the default first."""
    cat = _catalog()
    models = [
        ShippedModel(
            name=m["name"],
            summary=m["summary"],
            licence=m["licence"],
            licence_detail=m["licence_detail"],
            commercial_use=bool(m["commercial_use"]),
            trained_on=tuple(m["trained_on"]),
            origin=m["origin"],
            files=dict(m["files"]),
            evaluations=dict(m.get("evaluations", {})),
            figures=dict(m.get("figures", {})),
        )
        for m in cat["models"]
    ]
    return sorted(models, key=lambda m: m.name != cat["default"])


def default_name() -> str:
    return str(_catalog()["default"])


def shipped(name: str | None = None) -> ShippedModel:
    """The shipped model called ``name`` (None: the default)."""
    name = name or default_name()
    for m in list_shipped():
        if m.name == name:
            return m
    raise UsageError(f"no shipped model {name!r}; `faceattr models` lists {[m.name for m in list_shipped()]}")


def shipped_for_file(path: str | Path | None) -> ShippedModel | None:
    """The shipped model a file belongs to (by name), or None for a user's own model."""
    if path is None:
        return shipped()
    name = Path(path).name
    for m in list_shipped():
        if any(f["file"] == name for f in m.files.values()):
            return m
    return None
