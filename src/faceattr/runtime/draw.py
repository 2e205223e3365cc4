"""Annotated images: each face's box and label drawn on the photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceattr.runtime.results import PhotoResult


def draw_result(rgb: np.ndarray, result: PhotoResult, out_path: str | Path | None = None) -> bytes:
    """``rgb`` with each face's box and a short label, as PNG bytes (also written to ``out_path``, atomically,
    when given)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(rgb)
    d = ImageDraw.Draw(im)
    lw = max(2, round(max(im.size) / 400))
    for f in result.faces:
        if f.box is None:
            continue
        d.rectangle(f.box, outline=(255, 64, 64), width=lw)
        parts = []
        for a in f.attributes.values():
            parts.append(
                f"{a.value:.0f}" if a.value is not None and a.kind == "ordinal" and not a.probabilities else a.label
            )
        d.text((f.box[0], max(0, f.box[1] - 12 * lw)), " ".join(parts), fill=(255, 255, 0), font_size=max(12, 10 * lw))
    import io

    buf = io.BytesIO()
    im.save(buf, "PNG")
    data = buf.getvalue()
    if out_path is not None:
        from faceattr.safeio import atomic_write_bytes

        atomic_write_bytes(out_path, data)
    return data
