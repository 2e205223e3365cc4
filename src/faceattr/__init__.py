"""faceattr: heterogeneous face attribute estimation (ordinal age, gender, race) with one multi-task network.

    from faceattr import Predictor
    p = Predictor.from_pretrained()

Nothing is imported or set up at import time: the names below load their modules when first used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"  # kept equal to pyproject.toml's version (tests/test_serve.py checks)

__all__ = [
    "Predictor",
    "PhotoResult",
    "FaceResult",
    "Attribute",
    "ModelMeta",
    "FaceattrError",
    "create_model",
    "list_models",
    "get_formulation",
    "list_formulations",
]

_WHERE = {
    "Predictor": "faceattr.runtime.predictor",
    "PhotoResult": "faceattr.runtime.predictor",
    "FaceResult": "faceattr.runtime.predictor",
    "Attribute": "faceattr.runtime.predictor",
    "ModelMeta": "faceattr.runtime.meta",
    "FaceattrError": "faceattr.errors",
    "create_model": "faceattr.models",
    "list_models": "faceattr.models",
    "get_formulation": "faceattr.tasks.formulations",
    "list_formulations": "faceattr.tasks.formulations",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'faceattr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
