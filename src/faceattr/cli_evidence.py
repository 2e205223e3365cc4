"""``faceattr ablate``, ``faceattr audit`` and ``faceattr explain``."""

from __future__ import annotations

import argparse
import json

from faceattr.cli import register


def _add_ablate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="run an ablation grid (restartable) and write its tables and plots")
    p.add_argument("--config", "-c", required=True, help="configs/ablation-<dataset>.yaml")
    p.add_argument("--only", action="append", help="run only these experiments (repeatable)")
    p.add_argument("--seeds", help="comma-separated seeds instead of the config's")
    p.add_argument("--full-budget", action="store_true", help="ignore the config's reduced CPU budget")
    p.add_argument("--out-dir", help="where runs go (default: the config's out_dir)")
    p.add_argument("--results-dir", help="where tables go (default: the config's results_dir)")
    p.add_argument("--report-only", action="store_true", help="only rebuild the tables from finished runs")


def _run_ablate(a: argparse.Namespace) -> int:
    from faceattr.ablate import load_ablation, run_grid, run_one, write_report
    over: dict = {}
    if a.seeds:
        over["seeds"] = [int(s) for s in a.seeds.split(",")]
    if a.full_budget:
        over["budget"] = {}
    if a.out_dir:
        over["out_dir"] = a.out_dir
    if a.results_dir:
        over["results_dir"] = a.results_dir
    ab = load_ablation(a.config, over)
    if a.report_only:
        from pathlib import Path
        results = [json.loads(p.read_text()) for e in ab.experiments for s in ab.seeds
                   for p in [Path(ab.out_dir) / e / f"seed-{s}" / "result.json"] if p.is_file()]
    else:
        results = run_grid(ab, a.only, progress=not a.quiet)
    paths = write_report(ab, results)
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0


register("ablate", _add_ablate, _run_ablate)
