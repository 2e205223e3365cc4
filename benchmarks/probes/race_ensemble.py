"""How far can many networks of the shipped kind go on race together? An ensemble bound from the claims grids.

    python benchmarks/probes/race_ensemble.py [--grid configs/claims-utkface.yaml ...]

Every finished run of a claims grid (MobileNetV2 at 128 px, trained at the recipe's full budget: multi-task and
single-task race networks, every weighting, every seed) keeps its per-face test predictions
(``results/claims-*/runs/<arm>/seed-<n>/predictions.csv.gz``). This reads them and reports each network's race
accuracy and that of their ensemble: a vote in which each network gives its top class its own probability (the
predictions keep the top class and its probability only), with a 95 % bootstrap interval over the test faces.
Distillation into one network of this size rarely beats the ensemble it learns from, so an ensemble short of a
target says that more networks of this kind (or one distilled from them) will not reach it either: the features
(input size, network) are the limit. Nothing is trained or fitted; test faces are only counted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/_common.py
from _common import md_table, write  # noqa: E402
from faceattr.evidence.ablate import PREDICTIONS_FILE, kept_results, load_ablation


def grid_predictions(config: str) -> tuple[str, list[tuple[str, pd.DataFrame]]]:
    ab = load_ablation(config)
    runs = []
    for r in kept_results(ab):
        p = ab.kept_dir(r["experiment"], r["seed"]) / PREDICTIONS_FILE
        if p.is_file():
            d = pd.read_csv(p)
            if "race_index" in d.columns:
                runs.append((f"{r['experiment']} seed {r['seed']}", d))
    return ab.name, runs


def ensemble(runs: list[tuple[str, pd.DataFrame]], n_boot: int = 2000) -> dict[str, Any]:
    y = runs[0][1]["race_true"].to_numpy()
    for name, d in runs:
        if not np.array_equal(d["race_true"].to_numpy(), y):
            raise SystemExit(f"{name}: its test faces differ from {runs[0][0]}'s; the grid's runs must share one split")
    keep = y >= 0
    y = y[keep]
    n_cls = int(max(int(d["race_index"].max()) for _, d in runs) + 1)
    votes = np.zeros((len(y), n_cls))
    rows = []
    for name, d in runs:
        idx, p = d["race_index"].to_numpy()[keep], d["race_p"].to_numpy()[keep]
        votes[np.arange(len(y)), idx] += p
        rows.append({"networks": name, "race accuracy %": round(float((idx == y).mean()) * 100, 2)})
    correct = votes.argmax(1) == y
    rng = np.random.default_rng(0)
    boot = [correct[rng.integers(0, len(y), len(y))].mean() for _ in range(n_boot)]
    lo, hi = np.percentile(boot, [2.5, 97.5]) * 100
    single = [r["race accuracy %"] for r in rows]
    return {
        "faces": int(len(y)),
        "runs": rows,
        "best_single": max(single),
        "mean_single": round(float(np.mean(single)), 2),
        "ensemble": round(float(correct.mean()) * 100, 2),
        "ensemble_ci": [round(float(lo), 2), round(float(hi), 2)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", action="append", help="claims grid YAML (repeatable)")
    ap.add_argument("--target", type=float, default=87.0, help="the race accuracy to compare with (issue 9: 87)")
    a = ap.parse_args()
    grids = a.grid or ["configs/claims-utkface.yaml", "configs/claims-fairface.yaml"]
    out: dict[str, Any] = {"target": a.target, "grids": {}}
    md = [
        "Each network's race accuracy on its grid's **test** split, and a vote of all of them (each network gives its "
        "top class its probability); 95 % bootstrap interval over the faces. Nothing fitted. "
        f"Target (issue 9, UTKFace): {a.target:g} %.",
        "",
    ]
    for g in grids:
        name, runs = grid_predictions(g)
        if not runs:
            continue
        res = ensemble(runs)
        out["grids"][name] = {"config": g, **res}
        md += [
            f"## {name} (`{g}`, {res['faces']} test faces)",
            "",
            md_table(
                [
                    *res["runs"],
                    {"networks": "**mean of one network**", "race accuracy %": res["mean_single"]},
                    {
                        "networks": f"**vote of all {len(runs)}**",
                        "race accuracy %": f"**{res['ensemble']}** [{res['ensemble_ci'][0]}, {res['ensemble_ci'][1]}]",
                    },
                ],
                ["networks", "race accuracy %"],
            ),
            "",
        ]
    cmd = "python benchmarks/probes/race_ensemble.py" + "".join(f" --grid {g}" for g in a.grid or [])
    write("race-ensemble", out, "\n".join(md), cmd, results=Path(__file__).resolve().parent / "results")


if __name__ == "__main__":
    main()
