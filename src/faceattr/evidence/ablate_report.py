"""The ablation report: mean ± std tables over seeds, the verdicts in words (the rule shared with ``faceattr
claims``), and the plots."""

from __future__ import annotations

import json
import logging
import math
import statistics
from pathlib import Path
from typing import Any

from faceattr.config import load_config
from faceattr.evidence import report
from faceattr.evidence.ablate import COST, METRICS, AblationConfig
from faceattr.safeio import atomic_output, atomic_write_bytes, save_figure

log = logging.getLogger(__name__)


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


def _fmt(m: str, ms: tuple[float, float], seeds: int) -> str:
    """mean ± std over seeds; one seed has no spread to show, so its mean stands alone."""
    mean, sd = ms
    if m == "age_mae":
        return f"{mean:.2f}" + (f" ± {sd:.2f}" if seeds > 1 else "")
    return f"{100 * mean:.1f}" + (f" ± {100 * sd:.1f}" if seeds > 1 else "")


def verdicts(ab: AblationConfig, table: dict[str, Any], grid: Any = None) -> list[str]:
    """Plain statements on the method's claims, by the one rule of :mod:`faceattr.evidence.stats` (the rule
    ``faceattr claims`` uses): a paired bootstrap over the test faces of the kept runs' predictions, against the
    seed-to-seed noise. ``grid``: a :class:`faceattr.evidence.claims.Grid` of this ablation (None: built here)."""
    out: list[str] = []
    ref = table.get(ab.reference)
    if ref is None:
        return out
    if grid is None:
        grid = _grid(ab)

    def cmp(a: str, b: str, m: str) -> str:
        (ma, sa), (mb, sb) = table[a][m], table[b][m]
        na, nb = table[a]["seeds"], table[b]["seeds"]
        one = [e for e, n in ((a, na), (b, nb)) if n == 1]
        note = f"; one seed of {' and '.join(f'`{e}`' for e in one)}, spread not measured" if one else ""
        metric = None if grid is None else next((x for k, x in grid_metrics(grid).items() if k == m), None)
        res = None
        if metric is not None:
            try:
                res = grid.compare(a, b, metric)
            except FileNotFoundError:
                res = None
        if res is None:
            word = "not judged (no per-face predictions kept)"
        else:
            word = {"confirmed": "better", "refuted": "worse"}.get(res["verdict"], "not clearly different")
            word += f", difference {res['diff']:+.2f} [{res['ci'][0]:+.2f}, {res['ci'][1]:+.2f}]"
        return f"{word} ({_fmt(m, (ma, sa), na)} vs {_fmt(m, (mb, sb), nb)}{note})"

    singles = {
        e: table[e]
        for e in ab.groups.get("tasks", [])
        if e in table and e != ab.reference and len(table[e]["tasks"]) == 1
    }
    for e, row in singles.items():
        t = row["tasks"][0]
        for m in METRICS:
            if m.startswith(t + "_") and m in row and m in ref:
                out.append(f"- Multi-task vs single-task **{t}** ({m}): multi-task is {cmp(ab.reference, e, m)}.")
    if singles:
        cost_single = {c: sum(table[e][c][0] for e in singles) for c in ("parameters", "gflops", "train_seconds")}
        for c, v in cost_single.items():
            out.append(
                f"- Cost, {c}: the multi-task network needs {ref[c][0] / v:.2f}x what the "
                f"{len(singles)} single-task networks need together ({ref[c][0]:.4g} vs {v:.4g})."
            )
    for g in ("weighting", "age", "sharing"):
        for e in ab.groups.get(g, []):
            if e == ab.reference or e not in table:
                continue
            for m in ["age_mae", "gender_accuracy", "race_accuracy"] if g != "age" else ["age_mae", "age_group_exact"]:
                if m in table[e] and m in ref:
                    out.append(f"- {g}: `{ab.reference}` vs `{e}` on {m}: {cmp(ab.reference, e, m)}.")
    return out


def _grid(ab: AblationConfig) -> Any:
    """The claims grid of this ablation (its kept runs and their per-face predictions), or None without a base
    config to read the tasks from."""
    from faceattr.data.sources import dataset_tasks
    from faceattr.evidence.claims import Grid

    try:
        return Grid(ab, dataset_tasks(load_config(ab.base).data))
    except Exception as e:  # noqa: BLE001 - the tables are still written; the verdicts say they are not judged
        log.warning("ablation verdicts not judged: %s", e)
        return None


def grid_metrics(grid: Any) -> dict[str, Any]:
    from faceattr.evidence.stats import metrics_for

    return metrics_for(list(grid.tasks.values()))


def write_report(ab: AblationConfig, results: list[dict[str, Any]]) -> dict[str, Path]:
    import csv

    table = summarise(ab, results)
    out = Path(ab.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    # CSV: one row per experiment, mean and std columns
    with atomic_output(out / "ablation.csv") as f:
        cols = ["experiment", "seeds", *[f"{m}_{s}" for m in [*METRICS, *COST] for s in ("mean", "std")]]
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for exp, row in table.items():
            d: dict[str, Any] = {"experiment": exp, "seeds": row["seeds"]}
            for m in [*METRICS, *COST]:
                if m in row:
                    d[f"{m}_mean"], d[f"{m}_std"] = (round(v, 6) for v in row[m])
            w.writerow(d)
    atomic_write_bytes(out / "runs.json", json.dumps(results, indent=1).encode())
    # markdown
    any_r = results[0] if results else {}
    lines = [
        f"# Ablation: {ab.name}",
        "",
        f"Generated by `faceattr ablate --config <this grid's YAML>`; seeds {', '.join(map(str, ab.seeds))} "
        f"(the `seeds` column: how many have finished); each cell is mean ± std over seeds, "
        f"on the **{ab.eval_split}** split "
        f"({any_r.get('n_eval', '?')} faces). Budget: {json.dumps(ab.budget)} on top of `{ab.base}`.",
        "",
    ]
    groups = ab.groups or {"all": list(ab.experiments)}
    for g, names in groups.items():
        names = [n for n in names if n in table]
        if not names:
            continue
        ms = [m for m in METRICS if any(m in table[n] for n in names)]
        head = ["experiment", "seeds", "tasks", *ms, "train s", "img/s", "params (M)", "GFLOPs"]
        rows = (
            [
                n,
                r["seeds"],
                "+".join(r["tasks"]),
                *((_fmt(m, r[m], r["seeds"]) if m in r else "") for m in ms),
                f"{r['train_seconds'][0]:.0f}",
                f"{r['images_per_s'][0]:.0f}",
                f"{r['parameters'][0] / 1e6:.2f}",
                f"{r['gflops'][0]:.3f}",
            ]
            for n in names
            for r in [table[n]]
        )
        lines += [f"## {g}", "", *report.table(head, rows)]
        lines.append("")
    lines += ["## What the numbers say", "", *verdicts(ab, table), ""]
    atomic_write_bytes(out / "ablation.md", "\n".join(lines).encode())
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
    shown = [
        m
        for m in ("age_mae", "age_group_exact", "gender_accuracy", "race_accuracy")
        if any(m in r for r in table.values())
    ]
    if not shown:
        return {}
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 4.5), squeeze=False)
    names = list(table)
    for ax, m in zip(axes[0], shown):
        xs = [n for n in names if m in table[n]]
        ax.bar(
            range(len(xs)),
            [table[n][m][0] for n in xs],
            yerr=[table[n][m][1] for n in xs],
            capsize=3,
            color=["tab:red" if n == ab.reference else "tab:blue" for n in xs],
        )
        ax.set_xticks(range(len(xs)), xs, rotation=70, fontsize=8)
        ax.set_title(m + (" (lower is better)" if not METRICS[m] else ""))
        lo = min(table[n][m][0] - table[n][m][1] for n in xs)
        hi = max(table[n][m][0] + table[n][m][1] for n in xs)
        ax.set_ylim(lo - 0.1 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9))
    fig.suptitle(f"{ab.name}: mean ± std over up to {len(ab.seeds)} seeds")
    fig.tight_layout()
    p = out / "ablation.png"
    save_figure(fig, p, dpi=110)
    plt.close(fig)
    return {"plot": p}
