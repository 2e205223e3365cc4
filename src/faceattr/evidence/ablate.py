"""``faceattr ablate``: a grid of experiments x seeds, restartable, summarised as mean +- std tables and plots.

Each run trains into ``<out_dir>/<experiment>/seed-<s>/`` and, once finished and evaluated, writes
``result.json`` there; a restarted grid skips every run that has one and resumes a half-finished run from its
last epoch. A finished run is also *kept* under ``<results_dir>/runs/<experiment>/seed-<s>/`` (its result, its
per-epoch log -- the curves -- and its per-face test predictions, a few hundred kB): that folder is committed,
so a grid spread over many sessions or machines never recomputes a finished run. ``seeds_for`` gives an
experiment its own seeds (e.g. one seed for the arms that need only their curve). The ``budget`` block of the YAML
holds the overrides that make the grid fit a CPU (smaller input,
fewer images and epochs); without it the same grid runs at the base recipe's full budget.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from faceattr.config import ConfigError, load_config

log = logging.getLogger(__name__)

# the headline numbers, with their direction (True = higher is better)
METRICS: dict[str, bool] = {
    "age_mae": False,
    "age_cs5": True,
    "age_group_exact": True,
    "age_group_1off": True,
    "gender_accuracy": True,
    "race_accuracy": True,
    "race_macro_f1": True,
}
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
    seeds_for: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def jobs(self, only: list[str] | None = None) -> list[tuple[str, int]]:
        """(experiment, seed) pairs in the order they run: first every seed of the arms that take the grid's seeds,
        seed-major, then the arms ``seeds_for`` gives fewer seeds (the one-seed arms), seed-major; experiments in the
        YAML's order within each. A grid spread over many machines thus completes its main answers (put those arms
        first in the YAML) before it starts the arms that are shown by one curve each."""
        wanted = [e for e in self.experiments if not only or e in only]
        out = []
        for reduced in (False, True):
            arms = [e for e in wanted if (set(self.seeds_for.get(e, self.seeds)) != set(self.seeds)) == reduced]
            for s in sorted({s for e in arms for s in self.seeds_for.get(e, self.seeds)}):
                out += [(e, s) for e in arms if s in self.seeds_for.get(e, self.seeds)]
        return out

    def kept_dir(self, exp: str, seed: int) -> Path:
        return Path(self.results_dir) / "runs" / exp / f"seed-{seed}"


def load_ablation(path: str | Path, overrides: dict[str, Any] | None = None) -> AblationConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"ablation config not found: {p}")
    d = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    d.update(overrides or {})
    try:
        cfg = AblationConfig(
            name=d["name"],
            base=d["base"],
            out_dir=d["out_dir"],
            results_dir=d["results_dir"],
            seeds=tuple(int(s) for s in d.get("seeds", [0, 1, 2])),
            budget=dict(d.get("budget") or {}),
            experiments={k: dict(v or {}) for k, v in d["experiments"].items()},
            groups={k: list(v) for k, v in (d.get("groups") or {}).items()},
            eval_split=d.get("eval_split", "test"),
            eval_limit=d.get("eval_limit"),
            reference=d.get("reference", "mtl"),
            seeds_for={k: tuple(int(x) for x in v) for k, v in (d.get("seeds_for") or {}).items()},
        )
    except KeyError as e:
        raise ConfigError(f"{p}: missing {e.args[0]!r}") from e
    unknown_s = [n for n in cfg.seeds_for if n not in cfg.experiments]
    if unknown_s:
        raise ConfigError(f"{p}: seeds_for names unknown experiments {unknown_s}")
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


PREDICTIONS_FILE = "predictions.csv.gz"
KEPT_FILES = ("result.json", "log.csv", PREDICTIONS_FILE)


def face_predictions(tasks: Any, labels: dict[str, Any], preds: dict[str, dict[str, Any]]) -> "Any":
    """One row per evaluated face: per task the true label index and the prediction (ordinal: expected value and
    median level; nominal: class and its probability) -- what a paired comparison of two runs needs."""
    import numpy as np
    import pandas as pd

    cols: dict[str, Any] = {}
    for t in tasks:
        if t.name not in labels or t.name not in preds:
            continue
        p = preds[t.name]
        cols[f"{t.name}_true"] = np.asarray(labels[t.name], np.int64)
        cols[f"{t.name}_index"] = np.asarray(p["index"], np.int64)
        if t.kind == "ordinal":
            cols[f"{t.name}_value"] = np.round(np.asarray(p["value"], np.float64), 3)
        else:
            cols[f"{t.name}_p"] = np.round(np.asarray(p["probs"]).max(1), 4)
    return pd.DataFrame(cols)


def _keep(run_dir: Path, kept: Path) -> None:
    import shutil

    kept.mkdir(parents=True, exist_ok=True)
    for f in KEPT_FILES:
        if (run_dir / f).is_file():
            tmp = kept / (f + ".tmp")
            shutil.copyfile(run_dir / f, tmp)
            tmp.replace(kept / f)


def run_one(ab: AblationConfig, exp: str, seed: int, progress: bool = False) -> dict[str, Any]:
    """Train + evaluate one (experiment, seed), unless its result is kept in ``results_dir`` (committed) or in
    ``out_dir``; returns the result."""
    import torch

    from faceattr.evidence.evaluate import checkpoint_predictions
    from faceattr.models.checkpoint import build_model_from_meta, read_meta
    from faceattr.tasks.metrics import compute_metrics, headline
    from faceattr.training.loop import main, resolve_device

    kept = ab.kept_dir(exp, seed)
    if (kept / "result.json").is_file():
        return json.loads((kept / "result.json").read_text())
    run_dir = Path(ab.out_dir) / exp / f"seed-{seed}"
    done = run_dir / "result.json"
    if done.is_file():
        _keep(run_dir, kept)
        return json.loads(done.read_text())
    over = (
        _overrides(ab.budget)
        + _overrides(ab.experiments[exp])
        + [f"name=seed-{seed}", f"out_dir={Path(ab.out_dir) / exp}", f"train.seed={seed}"]
    )
    cfg = load_config(ab.base, over)
    t0 = time.perf_counter()
    summary = main(cfg, resume=True, progress=progress)
    wall = time.perf_counter() - t0
    last = run_dir / "last.safetensors"
    device = resolve_device(cfg.train.device)
    t1 = time.perf_counter()
    tasks, _, table, labels, preds = checkpoint_predictions(
        last, cfg.data, ab.eval_split, limit=ab.eval_limit, device=str(device)
    )
    infer_s = time.perf_counter() - t1
    metrics = compute_metrics(tasks, {k: v for k, v in preds.items() if k in labels}, labels)
    face_predictions(tasks, labels, preds).to_csv(run_dir / PREDICTIONS_FILE, index=False)
    meta = read_meta(last)  # FLOPs need the architecture only, not the weights again
    res = {
        "experiment": exp,
        "seed": seed,
        "overrides": ab.experiments[exp],
        "tasks": list(meta.task_names),
        "metrics": headline(metrics),
        "n_eval": len(table),
        "eval_split": ab.eval_split,
        "train_seconds": summary["train_seconds"],
        "wall_seconds": wall,
        "images_per_s": summary["images_per_s"],
        "eval_seconds": infer_s,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "best_epoch": summary["best_epoch"],
        "parameters": summary["parameters"],
        "gflops": count_gflops(build_model_from_meta(meta), cfg.data.image_size),
        "image_size": cfg.data.image_size,
        "epochs": cfg.train.epochs,
        "train_images": summary["train_images"],
    }
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1), encoding="utf-8")
    tmp.replace(done)
    _keep(run_dir, kept)
    return res


def _run_one_quiet(args: tuple[AblationConfig, str, int]) -> dict[str, Any]:
    import logging as _logging

    _logging.basicConfig(level=_logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return run_one(*args)


def _reported_runs(ab: AblationConfig) -> dict[tuple[str, int], dict[str, Any]]:
    """The rows of the committed report's ``runs.json`` (a grid from before runs were kept one by one has no
    ``runs/`` folder: its report's rows are its only record)."""
    p = Path(ab.results_dir) / "runs.json"
    if not p.is_file():
        return {}
    try:
        rows = json.loads(p.read_text())
        return {(str(r["experiment"]), int(r["seed"])): r for r in rows}
    except (ValueError, TypeError, KeyError) as e:
        log.warning("%s unreadable (%s): not used", p, e)
        return {}


def kept_results(ab: AblationConfig) -> list[dict[str, Any]]:
    """Every finished run of the grid found in ``results_dir/runs`` (committed), ``out_dir``, or the committed
    report's ``runs.json``, in that order: a report written on a machine that lacks the runs keeps their rows."""
    out = []
    reported = _reported_runs(ab)
    for e, s in ab.jobs():
        for p in (ab.kept_dir(e, s) / "result.json", Path(ab.out_dir) / e / f"seed-{s}" / "result.json"):
            if p.is_file():
                out.append(json.loads(p.read_text()))
                break
        else:
            if (e, s) in reported:
                out.append(reported[(e, s)])
    return out


def run_grid(
    ab: AblationConfig,
    only: list[str] | None = None,
    progress: bool = False,
    jobs: int = 1,
    stop_after_s: float | None = None,
) -> list[dict[str, Any]]:
    """Run the grid's (experiment, seed) pairs in order, ``jobs`` at a time (separate processes: several runs
    share one GPU well). With ``stop_after_s`` (a machine lent for a limited time) a run starts only if it can
    finish by then, judged by the longest run finished so far (the first ``jobs`` runs always start)."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

    reported = _reported_runs(ab)
    todo = [j for j in ab.jobs(only) if not (ab.kept_dir(*j) / "result.json").is_file() and j not in reported]
    t0 = time.perf_counter()
    longest = 0.0

    def may_start() -> bool:
        return stop_after_s is None or time.perf_counter() - t0 + longest <= stop_after_s

    if jobs <= 1:
        for e, s in todo:
            if not may_start():
                break
            log.info("ablation %s: %s seed %d", ab.name, e, s)
            t = time.perf_counter()
            run_one(ab, e, s, progress)
            longest = max(longest, time.perf_counter() - t)
            todo = todo[1:]
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as ex:
            running: dict[Future, tuple[str, int, float]] = {}
            while todo or running:
                while todo and len(running) < jobs and may_start():
                    e, s = todo.pop(0)
                    log.info("ablation %s: starting %s seed %d", ab.name, e, s)
                    running[ex.submit(_run_one_quiet, (ab, e, s))] = (e, s, time.perf_counter())
                if not running:
                    break
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for f in done:
                    e, s, t = running.pop(f)
                    try:
                        f.result()
                        longest = max(longest, time.perf_counter() - t)
                        log.info("ablation %s: finished %s seed %d in %.0f s", ab.name, e, s, time.perf_counter() - t)
                    except Exception as err:  # noqa: BLE001 - one failed run must not lose the others
                        log.error("ablation %s: %s seed %d failed: %s", ab.name, e, s, err)
    if todo:
        log.warning("ablation %s: out of time, %d runs not started: %s", ab.name, len(todo), todo)
    wanted = set(ab.jobs(only))
    return [r for r in kept_results(ab) if (r["experiment"], r["seed"]) in wanted]
