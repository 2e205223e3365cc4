"""Request parsing: options (tasks, max_faces, detect, tta_flip, explain) and base64 images."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from faceattr.runtime.predictor import Predictor
from faceattr.serve.errors import ApiError
from faceattr.serve.settings import OPTIONS, ServeSettings
from faceattr.vision.image import ImageError


@dataclass(frozen=True)
class Options:
    tasks: tuple[str, ...]
    max_faces: int
    detect: bool
    tta_flip: bool
    explain: tuple[str, ...]


def _bool(name: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise ApiError(422, "bad_option", f"{name} must be true or false, got {v!r}")


def _names(name: str, v: Any) -> tuple[str, ...]:
    if isinstance(v, (list, tuple)):
        items = [str(x) for x in v]
    else:
        items = str(v).split(",")
    return tuple(x.strip() for x in items if x.strip())


def parse_options(raw: dict[str, Any], predictor: Predictor, settings: ServeSettings, explain_ok: bool) -> Options:
    unknown = sorted(set(raw) - set(OPTIONS))
    if unknown:
        raise ApiError(422, "unknown_option", f"unknown option(s) {unknown}; the options are {list(OPTIONS)}")
    all_tasks = [t.name for t in predictor.tasks]
    enabled = [t for t in all_tasks if t not in settings.disabled_tasks]
    tasks = _names("tasks", raw["tasks"]) if "tasks" in raw else tuple(enabled)
    for t in tasks:
        if t not in all_tasks:
            raise ApiError(422, "bad_option", f"unknown task {t!r}; this model has {all_tasks}")
        if t in settings.disabled_tasks:
            raise ApiError(403, "task_disabled", f"the task {t!r} is disabled on this server")
    if not tasks:
        raise ApiError(422, "bad_option", "tasks is empty")
    try:
        max_faces = _strict_int(raw.get("max_faces", settings.max_faces))
    except (TypeError, ValueError):
        raise ApiError(422, "bad_option", f"max_faces must be an integer, got {raw.get('max_faces')!r}") from None
    if not 1 <= max_faces <= settings.max_faces:
        raise ApiError(422, "bad_option", f"max_faces must be in 1..{settings.max_faces}, got {max_faces}")
    explain = _names("explain", raw["explain"]) if raw.get("explain") not in (None, "", False) else ()
    for t in explain:
        if t not in tasks:
            raise ApiError(422, "bad_option", f"explain={t!r} is not among the requested tasks {list(tasks)}")
    if explain and not explain_ok:
        raise ApiError(422, "explain_unavailable", "heat-maps need the torch runtime; this server runs without it")
    return Options(
        tasks,
        max_faces,
        _bool("detect", raw.get("detect", True)),
        _bool("tta_flip", raw.get("tta_flip", bool(predictor.tta_flip))),
        explain,
    )


def _strict_int(v: Any) -> int:
    """A whole number as an int or its digits; true, 1.9 and "2.0" are refused rather than coerced."""
    if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError(v)
    if isinstance(v, str):
        if not v.strip().lstrip("+-").isdigit():
            raise ValueError(v)
        return int(v)
    if isinstance(v, (int, float)):
        return int(v)
    raise ValueError(v)


def decode_base64(data: Any, i: int) -> bytes:
    if not isinstance(data, str) or not data:
        raise ApiError(422, "bad_image", f"images[{i}].data must be a non-empty base64 string")
    if data.startswith("data:"):
        data = data.split(",", 1)[-1]
    data = "".join(data.split())  # MIME-wrapped base64 (what `base64 FILE` prints: lines of 76) is base64 too
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "bad_base64", f"images[{i}].data is not valid base64") from None


def image_error(e: ImageError, name: str) -> ApiError:
    msg = str(e).replace("<bytes>", name, 1)
    if "exceeds the limit" in msg:
        return ApiError(413, "image_too_large", msg)
    if "not an image" in msg:
        return ApiError(415, "not_an_image", msg)
    return ApiError(422, "bad_image", msg)
