"""``faceattr ablate``, ``faceattr audit`` and ``faceattr explain``."""

from __future__ import annotations

import argparse
import dataclasses
import json

from faceattr.cli.evaluate import output_plan
from faceattr.cli.predict import add_tta_flip_arg


def _add_ablate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="run an ablation grid (restartable) and write its tables and plots")
    p.add_argument("--config", "-c", required=True, help="configs/ablation-<dataset>.yaml")
    p.add_argument("--only", action="append", help="run only these experiments (repeatable)")
    p.add_argument("--seeds", help="comma-separated seeds instead of the config's")
    p.add_argument("--full-budget", action="store_true", help="ignore the config's reduced CPU budget")
    p.add_argument("--out-dir", help="where runs go (default: the config's out_dir)")
    p.add_argument("--results-dir", help="where tables go (default: the config's results_dir)")
    p.add_argument("--report-only", action="store_true", help="only rebuild the tables from finished runs")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override for every run, on top of the budget (e.g. data.root=/my/utkface)",
    )
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, each in its own process (a GPU holds several)")
    p.add_argument(
        "--stop-after",
        type=float,
        help="start a run only if it can finish within this many seconds (judged by the longest finished run)",
    )


def _run_ablate(a: argparse.Namespace) -> int:
    from faceattr.evidence.ablate import kept_results, load_ablation, run_grid
    from faceattr.evidence.ablate_report import write_report

    over: dict = {}
    if a.seeds:
        over["seeds"] = [int(s) for s in a.seeds.split(",")]
    if a.full_budget:
        over["budget"] = {}
    if a.out_dir:
        over["out_dir"] = a.out_dir
    if a.results_dir:
        over["results_dir"] = a.results_dir
    if a.jobs < 1:
        from faceattr.config import ConfigError

        raise ConfigError("--jobs must be at least 1")
    ab = load_ablation(a.config, over)
    if a.set:
        from faceattr.config import apply_overrides

        sets: dict = {}
        for kv in a.set:
            key = kv.split("=", 1)[0]
            sets[key] = apply_overrides({}, [kv])
            node = sets[key]
            for part in key.split("."):
                node = node[part]
            sets[key] = node
        ab = dataclasses.replace(ab, budget={**ab.budget, **sets})
    if not a.report_only:
        run_grid(ab, a.only, progress=not a.quiet, jobs=a.jobs, stop_after_s=a.stop_after)
    if a.seeds:
        # --seeds chooses what runs now; the report still covers every seed of the grid that has finished
        grid_seeds = load_ablation(a.config, {k: v for k, v in over.items() if k != "seeds"}).seeds
        ab = dataclasses.replace(ab, seeds=tuple(sorted({*grid_seeds, *ab.seeds})))
    results = kept_results(ab)
    paths = write_report(ab, results)
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0


def _add_claims(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("claims", help="judge the paper's claims from the finished runs of the claims grids")
    p.add_argument(
        "--config",
        "-c",
        action="append",
        required=True,
        help="a claims grid (repeatable), e.g. configs/claims-utkface.yaml",
    )
    p.add_argument("--out", default="results/claims.md")
    p.add_argument("--n-boot", type=int, default=2000, help="paired-bootstrap resamples (at least 100)")
    p.add_argument("--no-timing", action="store_true", help="skip the CPU inference timing of MTL vs STL")


def _run_claims(a: argparse.Namespace) -> int:
    from faceattr.config import ConfigError
    from faceattr.evidence.claims_report import write_claims

    if a.n_boot < 100:
        raise ConfigError("--n-boot must be at least 100")
    from faceattr.safeio import OutputPlan

    plan = OutputPlan(a.config)  # checked before anything is judged or written
    out = plan.claim_file(a.out, "--out")
    plan.claim_file(out.with_suffix(".json"), "--out's JSON")
    report = write_claims(a.config, a.out, a.n_boot, timing=not a.no_timing)
    for name, g in report["grids"].items():
        for r in g["comparisons"]:
            print(
                f"{name}: {r['a']} vs {r['b']} on {r['metric']}: {r['verdict']}"
                f"{' (provisional)' if r['provisional'] else ''}"
            )
    return 0


def _add_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="bias audit: metrics per race, gender and age band with bootstrap CIs")
    p.add_argument(
        "--checkpoint",
        help="checkpoint or .onnx file (default: the shipped model on faceattr predict's default path, INT8 + flip)",
    )
    p.add_argument("--data", required=True, help="utkface:DIR | fairface:DIR | manifest:CSV")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    p.add_argument("--limit", type=int)
    add_tta_flip_arg(p, "--model")
    p.add_argument("--n-boot", type=int, default=500)
    p.add_argument("--label-map", help="map the data's labels onto the model's (see faceattr evaluate --label-map)")
    p.add_argument("--out", required=True, help="folder for report.md, audit.json and the plots")


def _run_audit(a: argparse.Namespace) -> int:
    from faceattr.errors import check
    from faceattr.evidence.audit import audit_table, face_table, write_audit
    from faceattr.evidence.evaluate import parse_label_map
    from faceattr.runtime.policy import shipped_or

    check(a.n_boot >= 10, f"--n-boot must be at least 10 (500 is the default), got {a.n_boot}")
    check(a.limit is None or a.limit >= 1, f"--limit must be at least 1, got {a.limit}")
    ckpt, flip = shipped_or(a.checkpoint, a.tta_flip)
    output_plan(str(ckpt), a.data).claim_dir(a.out, "--out")
    lm = parse_label_map(a.label_map, a.data.split(":", 1)[0])
    df = face_table(ckpt, a.data, a.split, a.limit, lm, tta_flip=flip)
    res = audit_table(df, n_boot=a.n_boot)
    res.update({"checkpoint": str(ckpt), "tta_flip": flip, "data": a.data, "split": a.split, "n_boot": a.n_boot})
    paths = write_audit(res, a.out, f"`{ckpt}`{' with flip TTA' if flip else ''} on `{a.data}` ({a.split})")
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0


def _add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="Grad-CAM maps of each task's output, per face and averaged")
    p.add_argument("images", nargs="*", help="photos (faces are detected and aligned) or crops with --no-detect")
    p.add_argument(
        "--checkpoint", help="torch checkpoint (default: the shipped model); ONNX models cannot be explained"
    )
    p.add_argument("--task", default="all", help="age | gender | race | all")
    p.add_argument(
        "--layer", help="module name, e.g. 'branches.{task}.1' (default: the last block of the task's branch)"
    )
    p.add_argument("--age-threshold", type=int, help="explain the logit of 'age > level k' instead of the expected age")
    p.add_argument("--no-detect", action="store_true")
    p.add_argument("--detector", default="auto")
    p.add_argument("--yunet-model")
    p.add_argument("--average-data", help="DATASET:DIR: also write the mean map per task over its test faces")
    p.add_argument("--average-n", type=int, default=200)
    p.add_argument("--out", required=True)


def _run_explain(a: argparse.Namespace) -> int:
    from faceattr.evidence.explain import explain_run

    summary = explain_run(
        a.images,
        a.out,
        a.checkpoint,
        task=a.task,
        layer=a.layer,
        age_threshold=a.age_threshold,
        no_detect=a.no_detect,
        detector=a.detector,
        yunet_model=a.yunet_model,
        average_data=a.average_data,
        average_n=a.average_n,
    )
    print(json.dumps(summary, indent=1))
    return 0
