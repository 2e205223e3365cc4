"""``faceattr claims``: the paper's claims judged from the finished runs of the claims grids.

Every verdict is computed, never written by hand, by the one rule of :mod:`faceattr.evidence.stats` (a paired
bootstrap over the test faces against the seed-to-seed noise); an arm with several seeds is averaged over the seeds
the two arms share (``predictions.csv.gz`` of each kept run). The report is written by
:mod:`faceattr.evidence.claims_report`.

A comparison whose arms have fewer than three seeds is marked *provisional*: the bootstrap measures the noise of the
test set, not that of training, and with one seed the training noise is not measured at all.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceattr.evidence.ablate import PREDICTIONS_FILE, AblationConfig, kept_results
from faceattr.evidence.stats import Metric, metrics_for, paired_bootstrap, per_face, verdict
from faceattr.tasks.task import Task

log = logging.getLogger(__name__)

# The paper's Table II (arXiv 2403.00561): multi-task vs single-task accuracy, %


class Grid:
    """One claims grid: its finished runs and their per-face predictions."""

    def __init__(self, ab: AblationConfig, tasks: Sequence[Task]) -> None:
        self.ab = ab
        self.tasks = {t.name: t for t in tasks}
        self.results = kept_results(ab)
        self.by: dict[str, dict[int, dict[str, Any]]] = {}
        for r in self.results:
            self.by.setdefault(r["experiment"], {})[int(r["seed"])] = r
        self._pred: dict[tuple[str, int], Any] = {}

    def seeds(self, exp: str) -> list[int]:
        return sorted(self.by.get(exp, {}))

    def predictions(self, exp: str, seed: int) -> Any:
        import pandas as pd

        key = (exp, seed)
        if key not in self._pred:
            for d in (self.ab.kept_dir(exp, seed), Path(self.ab.out_dir) / exp / f"seed-{seed}"):
                if (d / PREDICTIONS_FILE).is_file():
                    self._pred[key] = pd.read_csv(d / PREDICTIONS_FILE)
                    break
            else:
                raise FileNotFoundError(f"no {PREDICTIONS_FILE} for {exp} seed {seed} of {self.ab.name}")
        return self._pred[key]

    def seed_values(self, exp: str, m: Metric) -> list[float]:
        vals = []
        for s in self.seeds(exp):
            v = self.by[exp][s]["metrics"].get(m.name)
            if v is not None:
                vals.append(float(v))
        return vals

    def compare(self, a: str, b: str, m: Metric, n_boot: int = 2000) -> dict[str, Any] | None:
        common = [s for s in self.seeds(a) if s in self.seeds(b)]
        if not common:
            return None
        ra, rb = (self.predictions(a, common[0]), self.predictions(b, common[0]))
        if f"{m.task}_true" not in ra or f"{m.task}_true" not in rb:
            return None
        task = self.tasks[m.task]
        fa = np.mean([per_face(self.predictions(a, s), m, task) for s in common], 0)
        fb = np.mean([per_face(self.predictions(b, s), m, task) for s in common], 0)
        if not np.array_equal(ra[f"{m.task}_true"].to_numpy(), rb[f"{m.task}_true"].to_numpy()):
            raise ValueError(f"{a} and {b} were not evaluated on the same faces")
        diff, lo, hi = paired_bootstrap(fa, fb, m.higher_better, n_boot)
        # the seeds whose two runs were trained on different devices (their difference includes the device's)
        mixed = [s for s in common if _device(self.by[a][s]) != _device(self.by[b][s])]
        va, vb = self.seed_values(a, m), self.seed_values(b, m)
        noise = max(statistics.stdev(va), statistics.stdev(vb)) if min(len(va), len(vb)) >= 2 else None
        scale = 1.0 if m.name.endswith("_mae") else 100.0  # seed values and per-face means share units
        return {
            "a": a,
            "b": b,
            "metric": m.name,
            "label": m.label,
            "seeds": common,
            "a_mean": float(fa.mean()) * scale,
            "b_mean": float(fb.mean()) * scale,
            "a_seed_std": (statistics.stdev(va) * scale if len(va) > 1 else None),
            "b_seed_std": (statistics.stdev(vb) * scale if len(vb) > 1 else None),
            "diff": diff * scale,
            "ci": [lo * scale, hi * scale],
            "verdict": verdict(diff, lo, hi, noise),
            "provisional": len(common) < 3,
            "mixed_device_seeds": mixed,
            "n_faces": int(len(fa)),
        }


@dataclass(frozen=True)
class Claim:
    """One claim "``ref`` beats each of ``others``", judged on every metric of the tasks it is about."""

    id: str
    wording: str
    ref: str
    others: tuple[str, ...]
    kind: str | None = None  # only tasks of this kind ("ordinal": age), else every task
    own_task: bool = False  # each of ``others`` is judged on its own task only (``single-<task>``)

    def about(self, other: str, task: Task) -> bool:
        if self.own_task and not other.endswith("-" + task.name):
            return False
        return self.kind is None or task.kind == self.kind


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "mtl_vs_stl",
        "The multi-task network beats the single-task networks (Table II)",
        "mtl",
        ("single-age", "single-gender", "single-race"),
        own_task=True,
    ),
    Claim(
        "uncertainty_vs_other",
        "Uncertainty weighting beats other loss weightings",
        "mtl",
        ("weighting-equal", "weighting-dwa", "weighting-gradnorm"),
    ),
    Claim(
        "ordinal_coral",
        "Age as rank-consistent ordinal 'age > k' sub-problems (CORAL) beats the other forms",
        "mtl",
        ("age-binary", "age-corn", "age-softmax", "age-regression"),
        kind="ordinal",
    ),
    Claim(
        "sharing_k5",
        "Sharing the shallow stages (k = 5) beats sharing less (k = 3) or everything (k = 7)",
        "mtl",
        ("share-k3", "share-k7"),
    ),
    Claim(
        "shipped_head",
        "The shipped age head (CORN, rank-consistent by construction) is at least as good as OR-CNN's "
        "independent binary classifiers (not a claim of the paper: the project's own choice, judged by the same rule)",
        "age-corn",
        ("age-binary",),
        kind="ordinal",
    ),
)


def judge(grid: Grid, n_boot: int = 2000) -> list[dict[str, Any]]:
    metrics = metrics_for(list(grid.tasks.values()))
    out = []
    for claim in CLAIMS:
        if claim.ref not in grid.by:
            continue
        for b in claim.others:
            if b not in grid.by:
                continue
            for m in metrics.values():
                if not claim.about(b, grid.tasks[m.task]):
                    continue
                c = grid.compare(claim.ref, b, m, n_boot)
                if c is not None:
                    out.append({"claim": claim.id, "wording": claim.wording, **c})
    return out


def cost(grid: Grid) -> dict[str, Any] | None:
    """FLOPs, parameters and training time of the multi-task network vs the three single-task ones together."""
    singles = [e for e in ("single-age", "single-gender", "single-race") if e in grid.by]
    if "mtl" not in grid.by or len(singles) < 3:
        return None

    exps = ["mtl", *singles]
    # training time compares like with like: the seeds all four networks were trained with, on the same device; an
    # accelerator's seeds where there are any (a lent GPU runs the grid in one launch), the CPU's only if there are
    # none: this project's CPU runs are made one or two at a time, at 1 or 2 threads, beside other work, so their
    # times differ by more than the networks do (FairFace MTL seeds 1 and 2: 6,914 vs 4,099 s)
    same = [
        seed
        for seed in set.intersection(*(set(grid.by[e]) for e in exps))
        if len({grid.by[e][seed].get("device_name") for e in exps}) == 1
    ]
    accel = [seed for seed in same if not on_cpu(grid.by["mtl"][seed])]
    same = accel or same

    def mean(exp: str, key: str, seeds: Any = None) -> float:
        runs = grid.by[exp]
        return statistics.fmean(float(runs[k][key]) for k in (seeds if seeds is not None else runs))

    out: dict[str, Any] = {}
    for key in ("gflops", "parameters", "train_seconds"):
        seeds = same if key == "train_seconds" else None
        if seeds is not None and not seeds:
            continue
        m, s = mean("mtl", key, seeds), sum(mean(e, key, seeds) for e in singles)
        out[key] = {"mtl": m, "stl_sum": s, "ratio": m / s}
        if seeds is not None:
            dev = grid.by["mtl"][seeds[0]].get("device_name", "cpu")
            out[key]["seeds"] = sorted(seeds)
            out[key]["device"] = dev
    return out


def _device(run: dict[str, Any]) -> str:
    """The device a finished run was trained on (runs from before ``device_name`` was recorded were on the CPU)."""
    return str(run.get("device_name", "cpu"))


def on_cpu(run: dict[str, Any]) -> bool:
    """Whether a finished run was trained on the CPU."""
    return _device(run).lower() == "cpu"


def device_effect(grid: Grid) -> dict[str, Any]:
    """How runs trained on an accelerator differ from the same arms' runs trained on the CPU.

    For every headline metric, over the arms that have seeds on both: the mean over arms of (mean of the arm's
    accelerator seeds - mean of its CPU seeds), in the metric's units (points for accuracies, years for MAE), with
    the arms' range. Comparisons pair runs of the same seed, hence of the same device, so this does not bias a
    verdict; it does widen the seed-to-seed spread the rule compares a difference with."""
    metrics = metrics_for(list(grid.tasks.values()))
    out: dict[str, Any] = {}
    for m in metrics.values():
        diffs = []
        for runs in grid.by.values():
            acc: list[float] = []
            cpu: list[float] = []
            for r in runs.values():
                v = r["metrics"].get(m.name)
                if v is not None:
                    (cpu if on_cpu(r) else acc).append(float(v))
            if acc and cpu:
                diffs.append(statistics.fmean(acc) - statistics.fmean(cpu))
        if diffs:
            scale = 1.0 if m.name.endswith("_mae") else 100.0
            out[m.name] = {
                "label": m.label,
                "mean": statistics.fmean(diffs) * scale,
                "min": min(diffs) * scale,
                "max": max(diffs) * scale,
                "arms": len(diffs),
            }
    return out


def inference_timing(base_config: str, repeats: int = 20) -> dict[str, Any]:
    """Forward time per face on this machine's CPU, MTL vs the three STL networks, measured in one run (untrained
    networks: the time does not depend on the weights)."""
    import time

    import torch

    from faceattr.config import load_config
    from faceattr.data.sources import dataset_tasks
    from faceattr.models import create_model

    cfg = load_config(base_config)
    tasks = dataset_tasks(cfg.data)
    kw = dict(
        shared_stages=cfg.model.shared_stages,
        ordinal_formulation=cfg.model.ordinal_formulation,
        dropout=0.0,
        pretrained=False,
    )
    nets = {"mtl": create_model(cfg.model.name, tasks, **kw)}
    for t in tasks:
        nets[f"single-{t.name}"] = create_model(cfg.model.name, [t], **kw)
    out: dict[str, Any] = {"threads": torch.get_num_threads()}
    for bs in (1, 32):
        x = torch.randn(bs, 3, cfg.data.image_size, cfg.data.image_size).contiguous(memory_format=torch.channels_last)
        times: dict[str, list[float]] = {k: [] for k in nets}
        with torch.inference_mode():
            for net in nets.values():
                net.eval().to(memory_format=torch.channels_last)(x)
            for _ in range(repeats):  # interleaved, so that machine noise hits every network alike
                for k, net in nets.items():
                    t0 = time.perf_counter()
                    net(x)
                    times[k].append((time.perf_counter() - t0) * 1000 / bs)
        med = {k: float(np.median(v)) for k, v in times.items()}
        stl = sum(v for k, v in med.items() if k != "mtl")
        out[f"batch{bs}"] = {"mtl_ms_per_face": med["mtl"], "stl_sum_ms_per_face": stl, "ratio": med["mtl"] / stl}
    return out
