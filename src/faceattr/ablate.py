"""``faceattr ablate``: a grid of experiments x seeds, restartable, summarised as mean +- std tables and plots.

Each run trains into ``<out_dir>/<experiment>/seed-<s>/`` and, once finished and evaluated, writes
``result.json`` there; a restarted grid skips every run that has one and resumes a half-finished run from its
last epoch. The ``budget`` block of the YAML holds the overrides that make the grid fit a CPU (smaller input,
fewer images and epochs); without it the same grid runs at the base recipe's full budget.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from faceattr.config import ConfigError, load_config

log = logging.getLogger(__name__)

# the headline numbers, with their direction (True = higher is better)
METRICS: dict[str, bool] = {"age_mae": False, "age_cs5": True, "age_group_exact": True, "age_group_1off": True,
                            "gender_accuracy": True, "race_accuracy": True, "race_macro_f1": True}
COST = ("train_seconds", "images_per_s", "parameters", "gflops")


@dataclass(frozen=True)
class AblationConfig:
    name: str
    base: str
    out_dir: str
    results_dir: str
    seeds: tuple[int, ...]
    budget: dict[str, Any]
    experiments: dict[str, dict[str, Any]]
    groups: dict[str, list[str]] = field(default_factory=dict)
    eval_split: str = "test"
    eval_limit: int | None = None
    reference: str = "mtl"


def load_ablation(path: str | Path, overrides: dict[str, Any] | None = None) -> AblationConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"ablation config not found: {p}")
    d = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    d.update(overrides or {})
    try:
        cfg = AblationConfig(name=d["name"], base=d["base"], out_dir=d["out_dir"], results_dir=d["results_dir"],
                             seeds=tuple(int(s) for s in d.get("seeds", [0, 1, 2])), budget=dict(d.get("budget") or {}),
                             experiments={k: dict(v or {}) for k, v in d["experiments"].items()},
                             groups={k: list(v) for k, v in (d.get("groups") or {}).items()},
                             eval_split=d.get("eval_split", "test"), eval_limit=d.get("eval_limit"),
                             reference=d.get("reference", "mtl"))
    except KeyError as e:
        raise ConfigError(f"{p}: missing {e.args[0]!r}") from e
    for g, names in cfg.groups.items():
        unknown = [n for n in names if n not in cfg.experiments]
        if unknown:
            raise ConfigError(f"{p}: group {g!r} names unknown experiments {unknown}")
    return cfg


def _overrides(d: dict[str, Any]) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in d.items()]


def count_gflops(model: Any, size: int) -> float:
    """Forward GFLOPs for one image (torch's FlopCounterMode: 2 x multiply-adds of convolutions and matmuls)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 3, size, size))
    return fc.get_total_flops() / 1e9


def run_one(ab: AblationConfig, exp: str, seed: int, progress: bool = False) -> dict[str, Any]:
    """Train + evaluate one (experiment, seed), unless its result.json exists; returns the result."""
    from faceattr.checkpoint import load_model
    from faceattr.evaluate import evaluate_checkpoint
    from faceattr.metrics import headline
    from faceattr.train import main
    run_dir = Path(ab.out_dir) / exp / f"seed-{seed}"
    done = run_dir / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    over = _overrides(ab.budget) + _overrides(ab.experiments[exp]) + [
        f"name=seed-{seed}", f"out_dir={Path(ab.out_dir) / exp}", f"train.seed={seed}"]
    cfg = load_config(ab.base, over)
    t0 = time.perf_counter()
    summary = main(cfg, resume=True, progress=progress)
    wall = time.perf_counter() - t0
    last = run_dir / "last.safetensors"
    ev = evaluate_checkpoint(last, cfg.data, ab.eval_split, ab.eval_limit)
    model, meta = load_model(last)
    res = {"experiment": exp, "seed": seed, "overrides": ab.experiments[exp], "tasks": [t["name"] for t in meta["tasks"]],
           "metrics": headline(ev["metrics"]), "n_eval": ev["n"], "eval_split": ab.eval_split,
           "train_seconds": summary["train_seconds"], "wall_seconds": wall,
           "images_per_s": summary["images_per_s"],
           "parameters": summary["parameters"], "gflops": count_gflops(model, cfg.data.image_size),
           "image_size": cfg.data.image_size, "epochs": cfg.train.epochs, "train_images": summary["train_images"]}
    done.write_text(json.dumps(res, indent=1), encoding="utf-8")
    return res


def run_grid(ab: AblationConfig, only: list[str] | None = None, progress: bool = False) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm
    jobs = [(e, s) for s in ab.seeds for e in ab.experiments if not only or e in only]
    results = []
    for e, s in tqdm(jobs, desc=ab.name, unit="run", disable=not progress):
        log.info("ablation %s: %s seed %d", ab.name, e, s)
        results.append(run_one(ab, e, s))
    return results


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return (statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0) if xs else (math.nan, math.nan)


def summarise(ab: AblationConfig, results: list[dict[str, Any]]) -> dict[str, Any]:
    """mean/std per experiment for every metric and cost figure."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by.setdefault(r["experiment"], []).append(r)
    table: dict[str, Any] = {}
    for exp in ab.experiments:
        rs = by.get(exp, [])
        if not rs:
            continue
        row: dict[str, Any] = {"seeds": len(rs), "tasks": rs[0]["tasks"]}
        for m in METRICS:
            vals = [r["metrics"][m] for r in rs if m in r["metrics"]]
            if vals:
                row[m] = _mean_std(vals)
        for c in COST:
            row[c] = _mean_std([float(r[c]) for r in rs])
        table[exp] = row
    return table


def _fmt(m: str, ms: tuple[float, float]) -> str:
    mean, sd = ms
    if m == "age_mae":
        return f"{mean:.2f} ± {sd:.2f}"
    return f"{100 * mean:.1f} ± {100 * sd:.1f}"


def verdicts(ab: AblationConfig, table: dict[str, Any]) -> list[str]:
    """Plain statements on the method's claims, from the numbers: a difference counts when it exceeds the
    larger of the two standard deviations over seeds; otherwise it is called inconclusive."""
    out: list[str] = []
    ref = table.get(ab.reference)

    def cmp(a: str, b: str, m: str) -> str:
        (ma, sa), (mb, sb) = table[a][m], table[b][m]
        better = (ma > mb) if METRICS[m] else (ma < mb)
        margin = abs(ma - mb)
        noise = max(sa, sb)
        word = ("better" if better else "worse") if margin > noise else "no clearly different"
        return f"{word} ({_fmt(m, (ma, sa))} vs {_fmt(m, (mb, sb))})"

    if ref is None:
        return out
    singles = {e: table[e] for e in ab.groups.get("tasks", []) if e in table and e != ab.reference
               and len(table[e]["tasks"]) == 1}
    for e, row in singles.items():
        t = row["tasks"][0]
        for m in METRICS:
            if m.startswith(t + "_") and m in row and m in ref:
                out.append(f"- Multi-task vs single-task **{t}** ({m}): multi-task is {cmp(ab.reference, e, m)}.")
    if singles:
        cost_single = {c: sum(table[e][c][0] for e in singles) for c in ("parameters", "gflops", "train_seconds")}
        for c, v in cost_single.items():
            out.append(f"- Cost, {c}: the multi-task network needs {ref[c][0] / v:.2f}x what the "
                       f"{len(singles)} single-task networks need together ({ref[c][0]:.4g} vs {v:.4g}).")
    for g in ("weighting", "age", "sharing"):
        for e in ab.groups.get(g, []):
            if e == ab.reference or e not in table:
                continue
            for m in (["age_mae", "gender_accuracy", "race_accuracy"] if g != "age" else ["age_mae", "age_group_exact"]):
                if m in table[e] and m in ref:
                    out.append(f"- {g}: `{ab.reference}` vs `{e}` on {m}: {cmp(ab.reference, e, m)}.")
    return out


def write_report(ab: AblationConfig, results: list[dict[str, Any]]) -> dict[str, Path]:
    import csv
    table = summarise(ab, results)
    out = Path(ab.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    # CSV: one row per experiment, mean and std columns
    with open(out / "ablation.csv", "w", newline="") as f:
        cols = ["experiment", "seeds", *[f"{m}_{s}" for m in [*METRICS, *COST] for s in ("mean", "std")]]
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for exp, row in table.items():
            d: dict[str, Any] = {"experiment": exp, "seeds": row["seeds"]}
            for m in [*METRICS, *COST]:
                if m in row:
                    d[f"{m}_mean"], d[f"{m}_std"] = (round(v, 6) for v in row[m])
            w.writerow(d)
    (out / "runs.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    # markdown
    any_r = results[0] if results else {}
    lines = [f"# Ablation: {ab.name}", "",
             f"Generated by `faceattr ablate --config <this grid's YAML>`; {len(ab.seeds)} seeds "
             f"({', '.join(map(str, ab.seeds))}); each cell is mean ± std over seeds, on the **{ab.eval_split}** split "
             f"({any_r.get('n_eval', '?')} faces). Budget: {json.dumps(ab.budget)} on top of `{ab.base}`.", ""]
    groups = ab.groups or {"all": list(ab.experiments)}
    for g, names in groups.items():
        names = [n for n in names if n in table]
        if not names:
            continue
        ms = [m for m in METRICS if any(m in table[n] for n in names)]
        lines += [f"## {g}", "", "| experiment | tasks | " + " | ".join(ms) + " | train s | img/s | params (M) | GFLOPs |",
                  "|---" * (len(ms) + 6) + "|"]
        for n in names:
            r = table[n]
            cells = [(_fmt(m, r[m]) if m in r else "") for m in ms]
            lines.append(f"| {n} | {'+'.join(r['tasks'])} | " + " | ".join(cells) +
                         f" | {r['train_seconds'][0]:.0f} | {r['images_per_s'][0]:.0f} | {r['parameters'][0] / 1e6:.2f} |"
                         f" {r['gflops'][0]:.3f} |")
        lines.append("")
    lines += ["## What the numbers say", "", *verdicts(ab, table), ""]
    (out / "ablation.md").write_text("\n".join(lines), encoding="utf-8")
    paths = {"markdown": out / "ablation.md", "csv": out / "ablation.csv"}
    paths.update(_plots(ab, table, out))
    return paths


def _plots(ab: AblationConfig, table: dict[str, Any], out: Path) -> dict[str, Path]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib not installed: no ablation plots")
        return {}
    shown = [m for m in ("age_mae", "age_group_exact", "gender_accuracy", "race_accuracy")
             if any(m in r for r in table.values())]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 4.5), squeeze=False)
    names = list(table)
    for ax, m in zip(axes[0], shown):
        xs = [n for n in names if m in table[n]]
        ax.bar(range(len(xs)), [table[n][m][0] for n in xs], yerr=[table[n][m][1] for n in xs], capsize=3,
               color=["tab:red" if n == ab.reference else "tab:blue" for n in xs])
        ax.set_xticks(range(len(xs)), xs, rotation=70, fontsize=8)
        ax.set_title(m + (" (lower is better)" if not METRICS[m] else ""))
        lo = min(table[n][m][0] - table[n][m][1] for n in xs)
        hi = max(table[n][m][0] + table[n][m][1] for n in xs)
        ax.set_ylim(lo - 0.1 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9))
    fig.suptitle(f"{ab.name}: mean ± std over {len(ab.seeds)} seeds")
    fig.tight_layout()
    p = out / "ablation.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return {"plot": p}
