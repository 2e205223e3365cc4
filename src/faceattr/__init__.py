"""faceattr: age, gender and race of every face in a photo, from one multi-task network, offline.

    import faceattr
    result = faceattr.analyze("photo.jpg")        # the shipped model on the default path
    p = faceattr.Predictor.from_pretrained()      # or build your own predictor

Nothing is imported or set up at import time: the names below load their modules when first used, and the
default predictor behind :func:`analyze` is built on its first call.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"  # kept equal to pyproject.toml's version (tests check)

if TYPE_CHECKING:  # the types a user's checker sees; at run time these load lazily (__getattr__)
    from faceattr.errors import FaceattrError
    from faceattr.models import create_model, list_models
    from faceattr.runtime.meta import ModelMeta
    from faceattr.runtime.predictor import Predictor
    from faceattr.runtime.results import Attribute, FaceResult, PhotoResult
    from faceattr.tasks.formulations import get_formulation, list_formulations
    from faceattr.vision.image import ImageSource

__all__ = [
    "analyze",
    "list_pretrained",
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
    "PhotoResult": "faceattr.runtime.results",
    "FaceResult": "faceattr.runtime.results",
    "Attribute": "faceattr.runtime.results",
    "ModelMeta": "faceattr.runtime.meta",
    "FaceattrError": "faceattr.errors",
    "create_model": "faceattr.models",
    "list_models": "faceattr.models",
    "get_formulation": "faceattr.tasks.formulations",
    "list_formulations": "faceattr.tasks.formulations",
}

_default: Predictor | None = None
_default_lock = threading.Lock()


def analyze(image: ImageSource, channels: str = "rgb", detect: bool = True) -> PhotoResult:
    """Every face's attributes in one photo (path, bytes, PIL image or array; arrays are RGB unless
    ``channels="bgr"``), by the shipped model on the default path — what ``faceattr predict`` does without options.

    The predictor is built on the first call and shared by later calls and threads. An image that cannot be used
    raises :class:`~faceattr.vision.image.ImageError`."""
    global _default
    with _default_lock:
        if _default is None:
            from faceattr.runtime.predictor import Predictor

            _default = Predictor.from_pretrained()
        predictor = _default
    return predictor.predict(image, detect=detect, channels=channels)


def list_pretrained() -> list[dict[str, Any]]:
    """Every model shipped with faceattr (the default first): name, tasks and classes, input size, licence,
    training data, origin and the figures measured on its default path. ``faceattr models`` prints the same."""
    from faceattr.runtime.catalog import list_shipped

    return [m.to_dict() for m in list_shipped()]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'faceattr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
