"""``faceattr audit``: where is the model biased? Metrics per race, gender and age band with bootstrap CIs.

Uses fairlearn's :class:`~fairlearn.metrics.MetricFrame` (groups, min/max, difference, ratio and bootstrap
confidence intervals). Each metric is a function of row indices into one per-face table, so metrics of
different tasks (age error, gender and race correctness) share one MetricFrame and one set of bootstrap draws.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from faceattr.evidence import report
from faceattr.runtime.tta import FlipMode
from faceattr.safeio import atomic_write_text, save_figure
from faceattr.tasks.task import MISSING

log = logging.getLogger(__name__)


def higher_is_better(metric: str) -> bool:
    return not metric.endswith(("_mae", "_mae_age_matched"))


def face_table(
    checkpoint: str | Path,
    data: str,
    split: str = "test",
    limit: int | None = None,
    label_map: dict[str, dict[str, Any]] | None = None,
    tta_flip: FlipMode = False,
) -> pd.DataFrame:
    """One row per face: true and predicted attributes, the age error, and the audit's group columns."""
    from faceattr.evidence.evaluate import checkpoint_predictions

    tasks, _, _, labels, preds = checkpoint_predictions(
        checkpoint, data, split, limit=limit, tta_flip=tta_flip, label_map=label_map
    )
    return build_face_table(tasks, preds, labels)


def build_face_table(
    tasks: Any, preds: dict[str, dict[str, np.ndarray]], labels: dict[str, np.ndarray]
) -> pd.DataFrame:
    """Per face and task: ``<task>_true``/``<task>_pred`` indices; a nominal task adds its class name (``<task>``,
    a sensitive feature); an ordinal task adds ``<task>_band`` (its level, or for a numeric task such as exact age
    the group :meth:`Task.group_of` gives) and, when numeric, the values and ``<task>_abs_err``."""
    df = pd.DataFrame(index=np.arange(len(next(iter(labels.values())))))
    for t in tasks:
        if t.name not in labels or t.name not in preds:
            continue
        y, p = labels[t.name], preds[t.name]
        ok = y != MISSING
        if t.kind == "ordinal":
            n = t.name
            if t.is_numeric:
                vals = np.asarray(t.values)
                df[f"{n}_value_true"] = np.where(ok, vals[np.where(ok, y, 0)], np.nan)
                df[f"{n}_value_pred"] = p["value"]
                df[f"{n}_abs_err"] = (df[f"{n}_value_pred"] - df[f"{n}_value_true"]).abs()
                if "low" in p:  # whether the printed interval holds the true value (NaN where it is unknown)
                    true_v = df[f"{n}_value_true"]
                    covered = (true_v >= p["low"]) & (true_v <= p["high"])
                    df[f"{n}_covered"] = np.where(ok, covered.astype(float), np.nan)
                groups = t.group_labels
                if groups:  # the bands the task declares (none: no band columns)
                    df[f"{n}_band"] = [groups[t.group_of(a)] if a == a else "unknown" for a in df[f"{n}_value_true"]]
                    df[f"{n}_true"] = [t.group_of(a) if a == a else MISSING for a in df[f"{n}_value_true"]]
                    df[f"{n}_pred"] = [t.group_of(a) for a in df[f"{n}_value_pred"]]
            else:
                df[f"{n}_band"] = [str(t.levels[v]) if v != MISSING else "unknown" for v in y]
                df[f"{n}_true"] = y
                df[f"{n}_pred"] = p["index"]
        else:
            df[f"{t.name}_true"] = y
            df[f"{t.name}_pred"] = p["index"]
            df[t.name] = [str(t.classes[v]) if v != MISSING else "unknown" for v in y]
    return df


def _tasks_in(df: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(ordinal tasks with bands, nominal tasks) present in a face table."""
    ordinal = [c[:-5] for c in df.columns if c.endswith("_band")]
    nominal = [c[:-5] for c in df.columns if c.endswith("_true") and c[:-5] in df.columns]
    return ordinal, nominal


def _metrics(df: pd.DataFrame) -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    def on(col_fn: Callable[[pd.DataFrame], float]) -> Callable[[np.ndarray, np.ndarray], float]:
        def f(idx_true: np.ndarray, idx_pred: np.ndarray) -> float:
            sub = df.iloc[np.asarray(idx_true)]
            return col_fn(sub)

        return f

    def acc(task: str) -> Callable[[pd.DataFrame], float]:
        def g(s: pd.DataFrame) -> float:
            m = s[f"{task}_true"] != MISSING
            return float((s.loc[m, f"{task}_true"] == s.loc[m, f"{task}_pred"]).mean()) if m.any() else float("nan")

        return g

    def mae(n: str) -> Callable[[pd.DataFrame], float]:
        return lambda s: float(s[f"{n}_abs_err"].mean())

    def cs5(n: str) -> Callable[[pd.DataFrame], float]:
        return lambda s: float((np.abs(np.rint(s[f"{n}_value_pred"]) - s[f"{n}_value_true"]) <= 5).mean())

    def coverage(n: str) -> Callable[[pd.DataFrame], float]:
        return lambda s: float(s[f"{n}_covered"].mean())

    def mae_age_matched(n: str) -> Callable[[pd.DataFrame], float]:
        """The group's MAE with its bands weighted as in the whole set (direct standardisation): a group with
        more older faces, whose ages are harder, is compared at the same age mix as the others. The bands the
        group lacks are left out and the weights of the others renormalised."""
        share = df[f"{n}_band"].value_counts(normalize=True)

        def g(s: pd.DataFrame) -> float:
            per_band = s.groupby(f"{n}_band")[f"{n}_abs_err"].mean()
            w = share.reindex(per_band.index).fillna(0.0)
            return float((per_band * w).sum() / w.sum()) if w.sum() > 0 else float("nan")

        return g

    out: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {}
    ordinal, nominal = _tasks_in(df)
    for n in ordinal:
        if f"{n}_abs_err" in df:
            out[f"{n}_mae"] = on(mae(n))
            out[f"{n}_cs5"] = on(cs5(n))
            out[f"{n}_mae_age_matched"] = on(mae_age_matched(n))
        if f"{n}_covered" in df:
            out[f"{n}_interval_coverage"] = on(coverage(n))
        out[f"{n}_group_accuracy"] = on(acc(n))
    for n in nominal:
        out[f"{n}_accuracy"] = on(acc(n))
    return out


def audit_table(
    df: pd.DataFrame, features: Sequence[str] | None = None, n_boot: int = 500, seed: int = 0
) -> dict[str, Any]:
    """fairlearn MetricFrames per sensitive feature (default: every nominal task's class and every ordinal task's
    band) -> a JSON-able dict of groups, CIs and disparities."""
    from fairlearn.metrics import MetricFrame

    metrics = _metrics(df)
    if features is None:
        ordinal, nominal = _tasks_in(df)
        features = [*nominal, *(f"{n}_band" for n in ordinal)]
    idx = np.arange(len(df))
    res: dict[str, Any] = {"n": len(df), "metrics": list(metrics), "features": {}}
    for feat in features:
        if feat not in df:
            continue
        keep = df[feat] != "unknown"
        mf = MetricFrame(
            metrics=metrics,
            y_true=idx[keep.to_numpy()],
            y_pred=idx[keep.to_numpy()],
            sensitive_features=df.loc[keep, feat].to_numpy(),
            n_boot=n_boot,
            ci_quantiles=[0.025, 0.975],
            random_state=seed,
        )
        by = mf.by_group
        lo, hi = mf.by_group_ci
        sizes = df.loc[keep, feat].value_counts()
        groups = {}
        for g in by.index:
            groups[str(g)] = {
                "n": int(sizes[g]),
                **{m: {"value": _f(by.loc[g, m]), "ci": [_f(lo.loc[g, m]), _f(hi.loc[g, m])]} for m in metrics},
            }
        summary = {}
        for m in metrics:
            col = by[m].dropna()
            if col.empty:
                continue
            best = col.idxmax() if higher_is_better(m) else col.idxmin()
            worst = col.idxmin() if higher_is_better(m) else col.idxmax()
            summary[m] = {
                "overall": _f(mf.overall[m]),
                "best_group": str(best),
                "best": _f(col[best]),
                "worst_group": str(worst),
                "worst": _f(col[worst]),
                "gap": _f(mf.difference()[m]),
                "ratio": _f(mf.ratio()[m]),
                "gap_ci": [_f(v[m]) for v in mf.difference_ci()],
            }
        res["features"][feat] = {"groups": groups, "summary": summary}
    res["confusion"] = _confusions(df)
    return res


def _f(x: Any) -> float:
    return float(x) if x is not None else float("nan")


def _confusions(df: pd.DataFrame) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix

    out = {}
    ordinal, nominal = _tasks_in(df)
    for task, name_col in [*((n, n) for n in nominal), *((n, f"{n}_band") for n in ordinal)]:
        m = df[f"{task}_true"] != MISSING
        if not m.any():
            continue
        names = sorted(set(df.loc[m, name_col]), key=lambda v: df.loc[m & (df[name_col] == v), f"{task}_true"].iloc[0])
        k = max(int(df[f"{task}_true"].max()), int(df[f"{task}_pred"].max())) + 1
        key = task if task in nominal else f"{task}_group"
        out[key] = {
            "labels": names,
            "matrix": confusion_matrix(
                df.loc[m, f"{task}_true"], df.loc[m, f"{task}_pred"], labels=list(range(k))
            ).tolist(),
        }
    return out


def _fmt(m: str, v: float) -> str:
    return f"{v:.2f}" if not higher_is_better(m) else f"{100 * v:.1f}"


def write_audit(res: dict[str, Any], out: str | Path, title: str) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "audit.json", json.dumps(res, indent=1))
    lines = [
        f"# Bias audit: {title}",
        "",
        f"{res['n']} faces. Values with 95 % bootstrap confidence intervals ({res.get('n_boot', '')} resamples, "
        "fairlearn `MetricFrame`). MAE in years (lower is better); other metrics in % (higher is better). "
        "CS@5: share of faces whose rounded age estimate is within 5 years. `mae_age_matched`: the group's MAE "
        "with its age bands weighted as in the whole set, so that groups are compared at the same age mix. "
        "`interval_coverage`: share of faces whose printed interval holds the true age (80 % by design). A "
        "group's interval that overlaps another's means the data cannot tell them apart.",
        "",
    ]
    for feat, fr in res["features"].items():
        ms = [m for m in res["metrics"] if m in fr["summary"]]
        ci = lambda m, v: f"{_fmt(m, v['value'])} [{_fmt(m, v['ci'][0])}, {_fmt(m, v['ci'][1])}]"  # noqa: E731
        lines += [f"## By {feat}", ""]
        lines += report.table(
            ["group", "n", *ms], ([g, gr["n"], *(ci(m, gr[m]) for m in ms)] for g, gr in fr["groups"].items())
        )
        lines += [""]
        head = ["metric", "overall", "best group", "worst group", "largest gap [95 % CI]", "ratio smaller/larger"]
        lines += report.table(
            head,
            (
                [
                    m,
                    _fmt(m, s["overall"]),
                    f"{s['best_group']} ({_fmt(m, s['best'])})",
                    f"{s['worst_group']} ({_fmt(m, s['worst'])})",
                    f"{_fmt(m, s['gap'])} [{_fmt(m, s['gap_ci'][0])}, {_fmt(m, s['gap_ci'][1])}]",
                    f"{s['ratio']:.3f}",
                ]
                for m in ms
                for s in [fr["summary"][m]]
            ),
        )
        lines += ["", f"![{feat}]({feat}.png)", ""]
    lines += ["## Confusion matrices", ""]
    for task, c in res["confusion"].items():
        labels = c["labels"]
        lines += [f"### {task}", "", *report.confusion(labels, [row[: len(labels)] for row in c["matrix"]]), ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    paths = {"report": out / "report.md", "json": out / "audit.json"}
    paths.update(_plots(res, out))
    return paths


def _group_order(g: str) -> tuple[int, float, str]:
    """Age bands in age order ("0-2" < "3-9" < "10-19" ... < "70+" / "more than 70"), other groups as named."""
    import re

    m = re.search(r"\d+(?:\.\d+)?", str(g))
    if m is None:
        return (1, 0.0, "")  # not a band: kept in the order given
    return (0, float(m.group()) + (0.5 if "more" in str(g) or "+" in str(g) else 0.0), str(g))


def _metric_axis(m: str) -> tuple[str, float]:
    """A metric's panel title with its unit, and the factor that puts its values in that unit."""
    task, _, kind = m.partition("_")
    if kind == "mae":
        return f"{task} MAE (years)", 1.0
    if kind == "mae_age_matched":
        return f"{task} MAE at the whole set's age mix (years)", 1.0
    if kind in ("accuracy", "group_exact", "group_1off", "interval_coverage", "macro_f1", "selection_rate", "cs5"):
        return f"{task} {kind.replace('_', ' ')} (%)", 100.0
    return m.replace("_", " "), 1.0


def _plots(res: dict[str, Any], out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    for feat, fr in res["features"].items():
        ms = [m for m in res["metrics"] if m in fr["summary"]]
        fig, axes = plt.subplots(1, len(ms), figsize=(3.6 * len(ms), 3.8), squeeze=False)
        groups = sorted(fr["groups"], key=_group_order)
        for ax, m in zip(axes[0], ms):
            label, scale = _metric_axis(m)
            v = [scale * fr["groups"][g][m]["value"] for g in groups]
            lo = [scale * (fr["groups"][g][m]["value"] - fr["groups"][g][m]["ci"][0]) for g in groups]
            hi = [scale * (fr["groups"][g][m]["ci"][1] - fr["groups"][g][m]["value"]) for g in groups]
            ax.bar(range(len(groups)), v, yerr=[lo, hi], capsize=3, color="tab:blue")
            ax.axhline(scale * fr["summary"][m]["overall"], color="tab:red", lw=1, ls="--")
            ax.set_xticks(range(len(groups)), groups, rotation=60, fontsize=8)
            ax.set_title(label, fontsize=10)
            ax.set_ylabel(label.split("(")[-1].rstrip(")") if "(" in label else "")
            ax.set_xlabel(feat.replace("_", " "))
        fig.suptitle(
            f"{m.split('_')[0] if len(ms) == 1 else 'metrics'} by {feat.replace('_', ' ')} "
            "(bars: 95 % bootstrap CI; dashed line: all faces)",
            fontsize=11,
        )
        fig.tight_layout()
        p = out / f"{feat}.png"
        save_figure(fig, p, dpi=100)
        plt.close(fig)
        paths[feat] = p
    return paths
