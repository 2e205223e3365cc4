"""A 24-megapixel JPEG through the default path: decoded at reduced size (what ``Predictor.predict`` does with a
file or its bytes) against a full-size decode, the same detection and network after either.

    python benchmarks/big_photos.py [--reps 5]

The photo: one of the group photos scaled to 6,000 x 4,000 px and saved as a JPEG (quality 92). Rows: median
milliseconds of the decode alone and of the whole call, and the faces found; the faces both paths find (IoU > 0.5)
and the largest difference between their boxes, in pixels of the 6,000 px photo.
"""

from __future__ import annotations

import argparse
import io

import numpy as np

from _common import SHARED, md_table, median_ms, write


def main() -> None:
    import cv2
    from PIL import Image

    from faceattr.runtime.predictor import Predictor
    from faceattr.vision.image import REDUCE_ABOVE, decode_image, load_image

    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    g = load_image(SHARED / "data" / "group-photos" / "sample3.jpg")
    big = cv2.resize(g, (6000, 4000), interpolation=cv2.INTER_CUBIC)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "JPEG", quality=92)
    data = buf.getvalue()
    pred = Predictor.from_pretrained()
    reduced, full = pred.predict(data), pred.predict(load_image(data))

    def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union if union > 0 else 0.0

    pairs = [(r.box, max(full.faces, key=lambda f: iou(r.box, f.box)).box) for r in reduced.faces]
    matched = [(a, b) for a, b in pairs if iou(a, b) > 0.5]
    diff = max((float(np.abs(np.array(a) - np.array(b)).max()) for a, b in matched), default=float("nan"))
    rows = [
        {
            "decode": f"reduced (JPEG DCT scaling, long side >= {REDUCE_ABOVE} px)",
            "decode ms": round(median_ms(lambda: decode_image(data, reduce_above=REDUCE_ABOVE), a.reps, 1), 1),
            "whole call ms": round(median_ms(lambda: pred.predict(data), a.reps, 1), 1),
            "faces": len(reduced.faces),
        },
        {
            "decode": "full size",
            "decode ms": round(median_ms(lambda: load_image(data), a.reps, 1), 1),
            "whole call ms": round(median_ms(lambda: pred.predict(load_image(data)), a.reps, 1), 1),
            "faces": len(full.faces),
        },
    ]
    md = (
        f"A {big.shape[1]} x {big.shape[0]} JPEG ({len(data) / 1e6:.1f} MB) through `Predictor.predict`.\n\n"
        + md_table(rows, ["decode", "decode ms", "whole call ms", "faces"])
        + f"\n\nFaces found by both paths (IoU > 0.5): {len(matched)} of {len(reduced.faces)}; the largest difference "
        f"between their boxes: {diff:.1f} px of the {big.shape[1]} px photo.\n"
    )
    write(
        "big-photos",
        {"rows": rows, "matched": len(matched), "box_max_diff_px": diff},
        md,
        f"python benchmarks/big_photos.py --reps {a.reps}",
    )


if __name__ == "__main__":
    main()
