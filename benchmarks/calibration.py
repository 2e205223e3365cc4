"""Are the printed probabilities and intervals worth what they say? The shipped model on its default path (INT8
ONNX + flip TTA, what ``faceattr predict`` runs) on test data it never trained on, with and without its calibration
(``faceattr fit-calibration``, fitted on its own validation split).

    python benchmarks/calibration.py [--model CKPT|ONNX] [--no-tta-flip] [--utkface DIR] [--fairface DIR]

Writes benchmarks/results/calibration.{json,md} and calibration-reliability.png:
- gender and race: ECE (15 bins, top label), Brier score, mean confidence vs accuracy, reliability diagrams;
- exact age (UTKFace test): coverage and median width of the 50 / 80 / 95 % intervals, by age band too;
- age groups (FairFace test): how often the 80 % interval overlaps the true group.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from faceattr.data.dataset import make_tensor_dataset
from faceattr.data.sources import load_split
from faceattr.data.spec import parse_data_spec
from faceattr.evidence.evaluate import align_labels, model_label_map, open_model, parse_label_map
from faceattr.runtime.policy import shipped_or
from faceattr.tasks.calibration import COVERAGES, brier, ece, reliability
from faceattr.tasks.decode import decode_outputs
from faceattr.tasks.task import FAIRFACE_AGE_GROUPS, MISSING, age_to_group

OUT = Path(__file__).resolve().parent / "results"
BANDS = ((1, 12), (13, 19), (20, 39), (40, 59), (60, 116))


def _outputs(outputs, meta, spec: str, tta_flip: bool, label_map=None):
    cfg = dataclasses.replace(parse_data_spec(spec), image_size=meta.input_size)
    table = load_split(cfg, "test")
    labels = align_labels(table, meta.tasks, label_map)
    ds = make_tensor_dataset(table, cfg.image_size, None, False)
    return outputs(ds, 256, tta_flip), labels, table


def _classes(meta, raw, labels, name: str) -> dict:
    out = {}
    for key, cal in (("uncalibrated", None), ("calibrated", meta.calibration)):
        dec = decode_outputs(raw, meta.tasks, meta.formulation, calibration=cal)
        out[key] = {}
        for t in ("gender", "race"):
            y = labels[t]
            m = y != MISSING
            p = dec[t]["probs"][m]
            out[key][t] = {
                "n": int(m.sum()),
                "ece": ece(p, y[m]),
                "brier": brier(p, y[m]),
                "mean_confidence": float(p.max(1).mean()),
                "accuracy": float((p.argmax(1) == y[m]).mean()),
                "reliability": reliability(p, y[m]),
            }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="checkpoint or .onnx (default: the shipped model on the default path)")
    ap.add_argument(
        "--tta-flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average each face with its mirror image (default: on for the shipped model, as faceattr predict)",
    )
    ap.add_argument("--utkface", default="../shared/data/utkface")
    ap.add_argument(
        "--fairface",
        default="data/fairface-official",
        help="FairFace with the official protocol (test = official val; scripts/get_fairface.py): the shipped model "
        "trained on official train 1-40,000, which includes all of ../shared/data/fairface",
    )
    ap.add_argument(
        "--label-map",
        help="FairFace's labels onto the model's (as for faceattr evaluate; default: the one the model was trained "
        "with, from its metadata)",
    )
    ap.add_argument("--tag", default="", help="suffix of the result file names (another model than the shipped one)")
    a = ap.parse_args()
    a.model, a.tta_flip = shipped_or(a.model, a.tta_flip)
    meta, outputs = open_model(a.model)
    if not meta.calibration:
        raise SystemExit(f"{a.model} has no calibration: run faceattr fit-calibration --checkpoint {a.model}")
    cmd = " ".join(["python benchmarks/calibration.py", *sys.argv[1:]])
    res: dict = {"model": str(a.model), "tta_flip": a.tta_flip, "command": cmd, "calibration": meta.calibration}
    res["data"] = {"utkface": a.utkface}
    res["data"]["fairface"] = a.fairface
    age = meta.tasks[0]
    vals = np.asarray(age.values)

    raw, labels, _ = _outputs(outputs, meta, f"utkface:{a.utkface}", a.tta_flip)
    res["utkface"] = {"classes": _classes(meta, raw, labels, "utkface"), "age": {}}
    y = labels["age"]
    m = y != MISSING
    truth = vals[y[m]]
    for key, cal in (("uncalibrated", None), ("calibrated", meta.calibration)):
        rows = {}
        for c in COVERAGES:
            d = decode_outputs(raw, meta.tasks, meta.formulation, coverage=c, calibration=cal)["age"]
            lo, hi = d["low"][m], d["high"][m]
            inside = (truth >= lo) & (truth <= hi)
            band = {
                f"{b0}-{b1}": {
                    "n": int(((truth >= b0) & (truth <= b1)).sum()),
                    "coverage": float(inside[(truth >= b0) & (truth <= b1)].mean()),
                    "median_width": float(np.median((hi - lo)[(truth >= b0) & (truth <= b1)])),
                }
                for b0, b1 in BANDS
            }
            rows[str(c)] = {"coverage": float(inside.mean()), "median_width": float(np.median(hi - lo)), "by_age": band}
        d = decode_outputs(raw, meta.tasks, meta.formulation, calibration=cal)["age"]
        adult = truth >= 20
        p_le2 = d["probs"][m][:, :2].sum(1)  # levels 1 and 2 years
        res["utkface"]["age"][key] = {"intervals": rows, "median_p_age_le_2_for_adults": float(np.median(p_le2[adult]))}

    lm = parse_label_map(a.label_map, "fairface") if a.label_map else model_label_map(meta, "fairface")
    raw_f, labels_f, table_f = _outputs(outputs, meta, f"fairface:{a.fairface}", a.tta_flip, lm)
    res["fairface"] = {"classes": _classes(meta, raw_f, labels_f, "fairface")}
    groups = table_f.frame["age"].to_numpy()  # the FairFace age-group index of each face
    ok = groups != MISSING
    bounds = []
    for g in FAIRFACE_AGE_GROUPS:
        lo_b, hi_b = (70, 116) if g.startswith("more") else tuple(int(x) for x in g.split("-"))
        bounds.append((lo_b, hi_b))
    glo = np.array([bounds[g][0] for g in groups[ok]])
    ghi = np.array([bounds[g][1] for g in groups[ok]])
    # do the distribution's expectation, median and mode tell the same story? (a shapeless one: they do not)
    d = decode_outputs(raw_f, meta.tasks, meta.formulation)["age"]
    p_f = d["probs"][ok]
    points = {"expected": d["value"][ok], "median": vals[d["index"][ok]], "mode": vals[p_f.argmax(1)]}

    true_g = groups[ok]
    res["fairface"]["age_group_exact_by_point"] = {
        k: float((np.array([age_to_group(a) for a in v]) == true_g).mean()) for k, v in points.items()
    }
    d_u = decode_outputs(raw, meta.tasks, meta.formulation)["age"]
    pts_u = {"expected": d_u["value"][m], "median": vals[d_u["index"][m]], "mode": vals[d_u["probs"][m].argmax(1)]}
    res["utkface"]["age_mae_by_point"] = {k: float(np.abs(v - truth).mean()) for k, v in pts_u.items()}
    for key, cal in (("uncalibrated", None), ("calibrated", meta.calibration)):
        d = decode_outputs(raw_f, meta.tasks, meta.formulation, calibration=cal)["age"]
        lo, hi = d["low"][ok], d["high"][ok]
        overlap = (lo <= ghi + 0.5) & (hi >= glo - 0.5)
        res["fairface"][f"age_interval_overlaps_group_{key}"] = float(overlap.mean())
        res["fairface"][f"age_interval_median_width_{key}"] = float(np.median(hi - lo))

    OUT.mkdir(parents=True, exist_ok=True)
    name = "calibration" + (f"-{a.tag}" if a.tag else "")
    res["figure"] = f"{name}-reliability.png"
    (OUT / f"{name}.json").write_text(json.dumps(res, indent=1), encoding="utf-8")
    _figure(res, OUT / res["figure"])
    (OUT / f"{name}.md").write_text(_markdown(res), encoding="utf-8")
    print(_markdown(res))


def _markdown(res: dict) -> str:
    cal = res["calibration"]
    lines = [
        "# Calibration of the printed probabilities and intervals",
        "",
        f"`{res.get('command', 'python benchmarks/calibration.py')}`; model `{Path(res['model']).name}`"
        f"{' with flip TTA' if res.get('tta_flip') else ''}, calibration fitted on "
        f"{cal['fitted_on']} (n = {cal['n']}): class calibrators "
        f"{ {t: v['method'] for t, v in (cal.get('class_method') or {}).items()} }, temperatures {cal['temperature']}, "
        f"class biases {cal.get('bias') or {}}, conformal quantiles "
        f"{cal['interval'].get('age', {}).get('q')} (score: {cal['interval'].get('age', {}).get('method')}). "
        f"Test splits, never trained on or fitted on: UTKFace protocol test (`{res.get('data', {}).get('utkface')}`), "
        f"FairFace test of `{res.get('data', {}).get('fairface')}` (with the official layout: official val).",
        "",
        "## Class probabilities (ECE: 15 bins, top label)",
        "",
        "| test set | task | n | accuracy | ECE before | ECE after | Brier before | Brier after | "
        "mean confidence before / after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for ds in ("utkface", "fairface"):
        c = res[ds]["classes"]
        for t in ("gender", "race"):
            u, k = c["uncalibrated"][t], c["calibrated"][t]
            lines.append(
                f"| {ds} | {t} | {u['n']} | {100 * u['accuracy']:.1f} % | {100 * u['ece']:.2f} % | "
                f"**{100 * k['ece']:.2f} %** | {u['brier']:.4f} | {k['brier']:.4f} | "
                f"{100 * u['mean_confidence']:.1f} / {100 * k['mean_confidence']:.1f} % |"
            )
    lines += [
        "",
        "(FairFace race: its seven races folded into the model's five, as in the model's config.) "
        f"Reliability diagrams: `{res.get('figure', 'calibration-reliability.png')}`.",
        "",
        "## Age intervals, UTKFace test",
        "",
        "| nominal | coverage before | median width before | coverage after | median width after |",
        "|---|---|---|---|---|",
    ]
    a = res["utkface"]["age"]
    for c in ("0.5", "0.8", "0.95"):
        u, k = a["uncalibrated"]["intervals"][c], a["calibrated"]["intervals"][c]
        lines.append(
            f"| {float(c):.0%} | {100 * u['coverage']:.1f} % | {u['median_width']:.1f} y | "
            f"**{100 * k['coverage']:.1f} %** | **{k['median_width']:.1f} y** |"
        )
    lines += [
        "",
        "80 % interval by true age (calibrated):",
        "",
        "| age | n | coverage | median width |",
        "|---|---|---|---|",
    ]
    for band, r in a["calibrated"]["intervals"]["0.8"]["by_age"].items():
        lines.append(f"| {band} | {r['n']} | {100 * r['coverage']:.1f} % | {r['median_width']:.1f} y |")
    f = res["fairface"]
    p_le2 = 100 * a["calibrated"]["median_p_age_le_2_for_adults"]
    overlap = 100 * f["age_interval_overlaps_group_calibrated"]
    lines += [
        "",
        f"Median P(age ≤ 2) for faces aged 20 or more: {p_le2:.2f} % "
        "(the distribution itself; calibration changes the interval, not the distribution).",
        "",
        "## Age intervals, FairFace test (age groups)",
        "",
        f"The 80 % interval overlaps the true age group for **{overlap:.1f} %** "
        f"of faces (median width {f['age_interval_median_width_calibrated']:.1f} y); before calibration "
        f"{100 * f['age_interval_overlaps_group_uncalibrated']:.1f} % (median width "
        f"{f['age_interval_median_width_uncalibrated']:.1f} y).",
        "",
        "## One distribution, three point estimates",
        "",
        "| | expected value | median | mode |",
        "|---|---|---|---|",
    ]
    if "age_mae_by_point" in res["utkface"]:
        u = res["utkface"]["age_mae_by_point"]
        g = f["age_group_exact_by_point"]
        lines += [
            f"| UTKFace test: age MAE | {u['expected']:.2f} y | {u['median']:.2f} y | {u['mode']:.2f} y |",
            f"| FairFace test: age group exact | {100 * g['expected']:.1f} % | {100 * g['median']:.1f} % | "
            f"{100 * g['mode']:.1f} % |",
            "",
        ]
    return "\n".join(lines)


def _figure(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 5, figsize=(21, 4.2))
    i = 0
    for ds in ("utkface", "fairface"):
        for t in ("gender", "race"):
            ax = axes[i]
            i += 1
            for key, color in (("uncalibrated", "tab:red"), ("calibrated", "tab:blue")):
                r = [b for b in res[ds]["classes"][key][t]["reliability"] if b["n"] > 0]
                ax.plot(
                    [b["confidence"] for b in r],
                    [b["accuracy"] for b in r],
                    "o-",
                    color=color,
                    ms=3,
                    label=f"{key} (ECE {100 * res[ds]['classes'][key][t]['ece']:.1f} %)",
                )
            ax.plot([0, 1], [0, 1], "k--", lw=0.8)
            ax.set(xlim=(0.3, 1), ylim=(0.3, 1), xlabel="confidence", ylabel="accuracy", title=f"{ds} test: {t}")
            ax.legend(fontsize=7)
    ax = axes[4]
    for key, color in (("uncalibrated", "tab:red"), ("calibrated", "tab:blue")):
        iv = res["utkface"]["age"][key]["intervals"]
        ax.plot([float(c) for c in iv], [iv[c]["coverage"] for c in iv], "o-", color=color, label=key)
    ax.plot([0.4, 1], [0.4, 1], "k--", lw=0.8)
    ax.set(xlabel="nominal coverage", ylabel="empirical coverage", title="utkface test: age intervals")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
