"""Annotated images, one style for ``faceattr predict --draw``, ``faceattr video`` and the web page: each face's box
and, on a filled background above it, its index (the ``face`` column of the CSV, the position in the JSON ``faces``
list), age with its 80 % range, gender and race. A detection scored below :data:`UNSURE_SCORE` gets a thin grey
box and ``#k ?`` only: it may not be a face, and its attributes are not shown.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceattr.runtime.results import FaceResult, PhotoResult

UNSURE_SCORE = 0.75  # YuNet's confidence: below it a detection is drawn as uncertain, without attributes
SURE_COLOUR = (0, 200, 255)
UNSURE_COLOUR = (160, 160, 160)
LABEL_BACKGROUND = (15, 25, 40)
LABEL_TEXT = (255, 255, 255)


def is_sure(score: float | None) -> bool:
    return score is None or score >= UNSURE_SCORE


def face_label(index: int | str, attributes: dict[str, Any], score: float | None = None) -> str:
    """``#index age (low-high) gender race``; ``#index ?`` for an uncertain detection. ``attributes``: task ->
    :class:`~faceattr.runtime.results.Attribute` or its dict form (pooled video estimates)."""
    if not is_sure(score):
        return f"#{index} ?"
    parts = [f"#{index}"]
    for a in attributes.values():
        d = a if isinstance(a, dict) else a.to_dict()
        if d.get("value") is not None and d.get("interval") is not None and not d.get("probabilities"):
            lo, hi = d["interval"]
            parts.append(f"{d['value']:.0f} ({lo:.0f}-{hi:.0f})")
        else:
            parts.append(str(d["label"]))
    return " ".join(parts)


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def draw_boxes(rgb: np.ndarray, items: Sequence[tuple[Any, str, bool]]) -> np.ndarray:
    """``rgb`` with each (box, label, sure) drawn: the box, and the label in white on a dark band above it (inside
    the box's top edge when there is no room above)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(rgb)
    d = ImageDraw.Draw(im)
    side = max(im.size)
    lw = max(2, round(side / 500))
    font = _font(max(12, round(side / 60)))
    for box, text, sure in items:
        x0, y0, x1, y1 = (float(v) for v in box)
        d.rectangle((x0, y0, x1, y1), outline=SURE_COLOUR if sure else UNSURE_COLOUR, width=lw if sure else 1)
        left_px, top_px, right_px, bottom_px = d.textbbox((0, 0), text, font=font)
        w, h = right_px - left_px + 2 * lw, bottom_px - top_px + 2 * lw
        top = y0 - h if y0 - h >= 0 else y0
        left = min(max(0.0, x0), max(0.0, im.size[0] - w))
        d.rectangle((left, top, left + w, top + h), fill=LABEL_BACKGROUND)
        d.text((left + lw - left_px, top + lw - top_px), text, fill=LABEL_TEXT, font=font)
    return np.asarray(im)


def face_items(faces: Sequence[FaceResult]) -> list[tuple[Any, str, bool]]:
    return [(f.box, face_label(i, f.attributes, f.score), is_sure(f.score)) for i, f in enumerate(faces) if f.box]


def drawing_format(source: str | Path) -> str:
    """JPEG for a JPEG input (a photo stays a photo-sized file), PNG otherwise."""
    return "JPEG" if Path(str(source)).suffix.lower() in (".jpg", ".jpeg") else "PNG"


def draw_result(
    rgb: np.ndarray, result: PhotoResult, out_path: str | Path | None = None, fmt: str | None = None
) -> bytes:
    """``rgb`` with every face of ``result`` drawn, encoded as ``fmt`` (default: :func:`drawing_format` of the
    result's source); also written to ``out_path``, atomically, when given."""
    from PIL import Image

    drawn = draw_boxes(rgb, face_items(result.faces))
    fmt = fmt or drawing_format(result.source)
    buf = io.BytesIO()
    Image.fromarray(drawn).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    data = buf.getvalue()
    if out_path is not None:
        from faceattr.safeio import atomic_write_bytes

        atomic_write_bytes(out_path, data)
    return data
