"""Mirror only the uncertain faces: the flip of the default path where it falls back to the float32 model (x86 CPUs
without VNNI, where the INT8 model's kernels saturate; ``faceattr.runtime.policy.default_tta_flip``).

    python benchmarks/selective_flip.py [--utkface DIR] [--fairface DIR] [--n-time 300]

1. The threshold, chosen on UTKFace **val**: the shipped float32 ONNX model's raw outputs with one view and with
   flip; the gender threshold is the smallest value of a 0.05 grid above the (calibrated, one-view) gender
   confidence of every val face whose gender decision flip changes, so that on val the gated path decides gender as
   full flip does. The val table shows the grid (share of faces mirrored, gender, race, MAE).
2. Held-out figures, the gated path run as the Predictor runs it (:func:`faceattr.training.inference.onnx_outputs` with
   ``{"gender": threshold}``): UTKFace test, and FairFace official val where ``--fairface`` exists
   (``scripts/get_fairface.py``): no flip / full flip / gated — accuracy, ECE, MAE, 80 % interval coverage and width.
3. The network's cost per face, faces one at a time as single-face photos reach it (UTKFace test chips, 2 threads,
   the three settings taking turns face by face); end to end against the peer is ``benchmarks/default_path.py``.

Writes benchmarks/results/selective-flip.{json,md}.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from _common import md_table, time_interleaved, write

GRID = tuple(round(0.5 + 0.05 * i, 2) for i in range(11))  # 0.50 ... 1.00


def _mix(none: dict[str, np.ndarray], full: dict[str, np.ndarray], sel: np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.where(sel.reshape(-1, *[1] * (v.ndim - 1)), full[k], v) for k, v in none.items()}


def _metrics(meta: Any, raw: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, Any]:
    from faceattr.tasks.decode import decode_outputs
    from faceattr.tasks.metrics import compute_metrics

    preds = decode_outputs(raw, meta.tasks, meta.formulation, calibration=meta.calibration)
    m = compute_metrics(meta.tasks, {k: v for k, v in preds.items() if k in labels}, labels)["overall"]
    row: dict[str, Any] = {}
    if "age" in m:
        a = m["age"]
        if "mae" in a:
            row["MAE (y)"] = round(a["mae"], 3)
            row["CS@5"] = round(100 * a["cs"]["5"], 2)
        row["age group"] = round(100 * a["group_exact"], 2)
        if "interval_coverage" in a:
            row["80 % interval coverage"] = round(100 * a["interval_coverage"], 1)
            row["median width (y)"] = round(a["interval_width_median"], 1)
    for t in ("gender", "race"):
        if t in m:
            row[t] = round(100 * m[t]["accuracy"], 2)
            row[f"{t} ECE"] = round(100 * m[t]["ece"], 2)
    return row


def choose_threshold(meta: Any, none: dict[str, np.ndarray], full: dict[str, np.ndarray]) -> tuple[float, float]:
    """(threshold, the largest one-view gender confidence among the faces whose gender decision flip changes)."""
    from faceattr.tasks.decode import decode_task

    task = next(t for t in meta.tasks if t.name == "gender")
    p0 = decode_task(none["gender"], task, calibration=meta.calibration)["probs"]
    p1 = decode_task(full["gender"], task, calibration=meta.calibration)["probs"]
    changed = p0.argmax(1) != p1.argmax(1)
    worst = float(p0.max(1)[changed].max()) if changed.any() else 0.5
    return next((g for g in GRID if g > worst), 1.0), worst


def _time(backend: Any, chips: np.ndarray, settings: dict[str, Any], meta: Any) -> dict[str, float]:
    """Mean network milliseconds per face under each flip setting, faces one at a time, settings taking turns."""
    from faceattr.runtime.tta import run_numpy

    x = meta.normalize(chips)

    def net(flip: Any) -> Any:
        def one(face: np.ndarray) -> int:
            run_numpy(backend.run, face, flip, meta.tasks, meta.calibration)
            return 0  # no faces to count: chips

        return one

    timed = time_interleaved([(k, net(f)) for k, f in settings.items()], [x[i : i + 1] for i in range(len(x))])
    return {k: t["mean ms"] for k, t in zip(settings, timed)}


def main() -> None:
    import torch

    from faceattr.evidence.evaluate import model_label_map, split_data
    from faceattr.runtime.backends import OnnxBackend
    from faceattr.runtime.policy import FALLBACK_FLIP_BELOW, SHIPPED_ONNX, shown_path
    from faceattr.runtime.tta import uncertain
    from faceattr.training.inference import onnx_outputs

    ap = argparse.ArgumentParser()
    ap.add_argument("--utkface", default="../shared/data/utkface")
    ap.add_argument("--fairface", default="data/fairface-official", help="FairFace, official protocol (if present)")
    ap.add_argument("--n-time", type=int, default=300, help="test faces timed one at a time")
    a = ap.parse_args()
    torch.set_num_threads(2)
    backend = OnnxBackend(SHIPPED_ONNX, 2)
    meta = backend.meta
    model = shown_path(SHIPPED_ONNX)

    _, _, y_val, ds_val = split_data(f"utkface:{a.utkface}", "val", meta)
    none_v, full_v = onnx_outputs(backend, ds_val, 256, False), onnx_outputs(backend, ds_val, 256, True)
    thr, worst = choose_threshold(meta, none_v, full_v)
    grid = []
    for g in GRID[:-1]:
        sel = uncertain(none_v, {"gender": g}, meta.tasks, meta.calibration)
        grid.append(
            {
                "gender threshold": g,
                "mirrored": f"{100 * sel.mean():.1f} %",
                **_metrics(meta, _mix(none_v, full_v, sel), y_val),
            }
        )
    grid.insert(0, {"gender threshold": "no flip", "mirrored": "0 %", **_metrics(meta, none_v, y_val)})
    grid.append({"gender threshold": "full flip", "mirrored": "100 %", **_metrics(meta, full_v, y_val)})

    tests: dict[str, Any] = {}
    sets = [("UTKFace test", f"utkface:{a.utkface}", None)]
    if Path(a.fairface).is_dir():
        sets.append(("FairFace official val", f"fairface:{a.fairface}", model_label_map(meta, "fairface")))
    rows = []
    chips_t = None
    timed_share = 0.0
    for name, spec, lm in sets:
        _, _, y, ds = split_data(spec, "test", meta, label_map=lm)
        none, full = onnx_outputs(backend, ds, 256, False), onnx_outputs(backend, ds, 256, True)
        gated = onnx_outputs(backend, ds, 256, {"gender": thr})
        unsure = uncertain(none, {"gender": thr}, meta.tasks, meta.calibration)
        if chips_t is None:  # a random draw: the split is in file-name order, i.e. by age (children's gender is unsure)
            pick = np.sort(np.random.default_rng(0).choice(len(ds), min(a.n_time, len(ds)), replace=False))
            chips_t, timed_share = np.asarray(ds.images)[pick], float(unsure[pick].mean())
        tests[name] = {"n": len(ds), "mirrored": float(unsure.mean())}
        exact_age = name.startswith("UTKFace")  # FairFace's ages are groups: its rows show the group accuracy only
        for setting, raw, mir in (
            ("no flip", none, 0.0),
            ("full flip", full, 1.0),
            (f"gender < {thr:g}", gated, float(unsure.mean())),
        ):
            row = {"data": name, "n": len(ds), "flip": setting, "mirrored": f"{100 * mir:.1f} %"}
            for k, v in _metrics(meta, raw, y).items():
                if exact_age or k in ("age group", "gender", "gender ECE", "race", "race ECE"):
                    row[k] = v
            rows.append(row)

    assert chips_t is not None
    settings = {"no flip": False, "full flip": True, f"gender < {thr:g}": {"gender": thr}}
    ms = _time(backend, chips_t, settings, meta)
    timing = [
        {"flip": k, "network ms per face": round(v, 2), "vs full flip": round(v / ms["full flip"], 2)}
        for k, v in ms.items()
    ]

    agrees = math.isclose(thr, FALLBACK_FLIP_BELOW)
    cmd = " ".join(["python benchmarks/selective_flip.py", *sys.argv[1:]])
    md = (
        f"Model: `{model}` (the shipped float32 ONNX model: the default path on x86 CPUs without VNNI), calibrated "
        "probabilities and intervals as the Predictor prints them.\n\n"
        f"## 1. The threshold, chosen on UTKFace val ({len(ds_val)} faces)\n\n"
        f"The largest one-view gender confidence among the val faces whose gender decision flip changes: {worst:.3f}; "
        f"the next grid value: **{thr:g}** (`runtime.predictor.FALLBACK_FLIP_BELOW` = {FALLBACK_FLIP_BELOW:g}: "
        f"{'the same' if agrees else 'DIFFERENT: update it'}).\n\n"
        + md_table(grid, list(grid[0]))
        + "\n\n## 2. Held out: no flip, full flip, and the gated flip run as the Predictor runs it\n\n"
        + md_table(rows, list(rows[0]))
        + f"\n\n## 3. The network's cost per face ({len(chips_t)} UTKFace test faces drawn at random, "
        f"{100 * timed_share:.1f} % of them gender-uncertain; one at a time, 2 threads, the settings taking turns)\n\n"
        + md_table(timing, list(timing[0]))
        + "\n"
    )
    res = {"model": model, "threshold": thr, "worst_changed_confidence": worst, "constant_agrees": agrees}
    data = {**res, "val_grid": grid, "test": rows, "sets": tests, "timing": timing, "timed_share": timed_share}
    write("selective-flip", data, md, cmd)
    if not agrees:
        raise SystemExit(f"the chosen threshold {thr} differs from faceattr.runtime.predictor.FALLBACK_FLIP_BELOW")


if __name__ == "__main__":
    main()
