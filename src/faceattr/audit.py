"""``faceattr audit``: where is the model biased? Metrics per race, gender and age band with bootstrap CIs.

Uses fairlearn's :class:`~fairlearn.metrics.MetricFrame` (groups, min/max, difference, ratio and bootstrap
confidence intervals). Each metric is a function of row indices into one per-face table, so metrics of
different tasks (age error, gender and race correctness) share one MetricFrame and one set of bootstrap draws.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from faceattr.tasks import FAIRFACE_AGE_GROUPS, MISSING, age_to_group

log = logging.getLogger(__name__)

HIGHER_IS_BETTER = {"mae": False, "cs5": True, "gender_accuracy": True, "race_accuracy": True,
                    "age_group_accuracy": True}


def face_table(checkpoint: str | Path, data: str, split: str = "test", limit: int | None = None,
               label_map: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:
    """One row per face: true and predicted attributes, the age error, and the audit's group columns."""
    from faceattr.evaluate import checkpoint_predictions
    tasks, _, _, labels, preds = checkpoint_predictions(checkpoint, data, split, limit, label_map=label_map)
    return build_face_table(tasks, preds, labels)


def build_face_table(tasks: Any, preds: dict[str, dict[str, np.ndarray]], labels: dict[str, np.ndarray]) -> pd.DataFrame:
    by = {t.name: t for t in tasks}
    df = pd.DataFrame(index=np.arange(len(next(iter(labels.values())))))
    if "age" in by and "age" in labels:
        t = by["age"]
        y = labels["age"]
        ok = y != MISSING
        vals = np.asarray(t.values)
        numeric = all(isinstance(v, (int, float)) for v in t.levels)
        df["age_true"] = np.where(ok, vals[np.where(ok, y, 0)], np.nan)
        df["age_pred"] = preds["age"]["value"]
        df["age_abs_err"] = (df["age_pred"] - df["age_true"]).abs()
        if numeric:
            df["age_band"] = [FAIRFACE_AGE_GROUPS[age_to_group(a)] if a == a else "unknown" for a in df["age_true"]]
            df["age_group_true"] = [age_to_group(a) if a == a else -1 for a in df["age_true"]]
            df["age_group_pred"] = [age_to_group(a) for a in df["age_pred"]]
        else:
            df["age_band"] = [str(t.levels[v]) if v != MISSING else "unknown" for v in y]
            df["age_group_true"] = y
            df["age_group_pred"] = preds["age"]["index"]
    for name in ("gender", "race"):
        if name in by and name in labels:
            t = by[name]
            y = labels[name]
            df[f"{name}_true"] = y
            df[f"{name}_pred"] = preds[name]["index"]
            df[name] = [str(t.classes[v]) if v != MISSING else "unknown" for v in y]
    return df


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

    out: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {}
    if "age_abs_err" in df:
        out["mae"] = on(lambda s: float(s["age_abs_err"].mean()))
        out["cs5"] = on(lambda s: float((np.abs(np.rint(s["age_pred"]) - s["age_true"]) <= 5).mean()))
        out["age_group_accuracy"] = on(lambda s: float((s["age_group_true"] == s["age_group_pred"]).mean()))
    for task in ("gender", "race"):
        if f"{task}_true" in df:
            out[f"{task}_accuracy"] = on(acc(task))
    return out


def audit_table(df: pd.DataFrame, features: tuple[str, ...] = ("race", "gender", "age_band"), n_boot: int = 500,
                seed: int = 0) -> dict[str, Any]:
    """fairlearn MetricFrames per sensitive feature -> a JSON-able dict of groups, CIs and disparities."""
    from fairlearn.metrics import MetricFrame
    metrics = _metrics(df)
    idx = np.arange(len(df))
    res: dict[str, Any] = {"n": len(df), "metrics": list(metrics), "features": {}}
    for feat in features:
        if feat not in df:
            continue
        keep = df[feat] != "unknown"
        mf = MetricFrame(metrics=metrics, y_true=idx[keep.to_numpy()], y_pred=idx[keep.to_numpy()],
                         sensitive_features=df.loc[keep, feat].to_numpy(), n_boot=n_boot,
                         ci_quantiles=[0.025, 0.975], random_state=seed)
        by = mf.by_group
        lo, hi = mf.by_group_ci
        sizes = df.loc[keep, feat].value_counts()
        groups = {}
        for g in by.index:
            groups[str(g)] = {"n": int(sizes[g]), **{m: {"value": _f(by.loc[g, m]), "ci": [_f(lo.loc[g, m]), _f(hi.loc[g, m])]}
                                                      for m in metrics}}
        summary = {}
        for m in metrics:
            col = by[m].dropna()
            if col.empty:
                continue
            best = col.idxmax() if HIGHER_IS_BETTER[m] else col.idxmin()
            worst = col.idxmin() if HIGHER_IS_BETTER[m] else col.idxmax()
            summary[m] = {"overall": _f(mf.overall[m]), "best_group": str(best), "best": _f(col[best]),
                          "worst_group": str(worst), "worst": _f(col[worst]),
                          "gap": _f(mf.difference()[m]), "ratio": _f(mf.ratio()[m]),
                          "gap_ci": [_f(v[m]) for v in mf.difference_ci()]}
        res["features"][feat] = {"groups": groups, "summary": summary}
    res["confusion"] = _confusions(df)
    return res


def _f(x: Any) -> float:
    return float(x) if x is not None else float("nan")


def _confusions(df: pd.DataFrame) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix
    out = {}
    for task in ("gender", "race"):
        if f"{task}_true" not in df:
            continue
        m = df[f"{task}_true"] != MISSING
        names = sorted(set(df.loc[m, task]), key=lambda n: df.loc[m & (df[task] == n), f"{task}_true"].iloc[0])
        k = max(int(df[f"{task}_true"].max()), int(df[f"{task}_pred"].max())) + 1
        out[task] = {"labels": names, "matrix": confusion_matrix(df.loc[m, f"{task}_true"], df.loc[m, f"{task}_pred"],
                                                                  labels=list(range(k))).tolist()}
    if "age_group_true" in df:
        m = df["age_group_true"] != MISSING
        k = max(int(df["age_group_true"].max()), int(df["age_group_pred"].max())) + 1
        labels = sorted(set(df.loc[m, "age_band"]), key=lambda n: df.loc[m & (df["age_band"] == n), "age_group_true"].iloc[0])
        out["age_group"] = {"labels": labels, "matrix": confusion_matrix(df.loc[m, "age_group_true"], df.loc[m, "age_group_pred"],
                                                                         labels=list(range(k))).tolist()}
    return out


def _fmt(m: str, v: float) -> str:
    return f"{v:.2f}" if m == "mae" else f"{100 * v:.1f}"


def write_audit(res: dict[str, Any], out: str | Path, title: str) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "audit.json").write_text(json.dumps(res, indent=1), encoding="utf-8")
    lines = [f"# Bias audit: {title}", "",
             f"{res['n']} faces. Values with 95 % bootstrap confidence intervals ({res.get('n_boot', '')} resamples, "
             "fairlearn `MetricFrame`). MAE in years (lower is better); other metrics in % (higher is better). "
             "CS@5: share of faces whose rounded age estimate is within 5 years. A group's interval that overlaps "
             "another's means the data cannot tell them apart.", ""]
    for feat, fr in res["features"].items():
        ms = [m for m in res["metrics"] if m in fr["summary"]]
        lines += [f"## By {feat}", "", "| group | n | " + " | ".join(ms) + " |", "|---" * (len(ms) + 2) + "|"]
        for g, gr in fr["groups"].items():
            cells = [f"{_fmt(m, gr[m]['value'])} [{_fmt(m, gr[m]['ci'][0])}, {_fmt(m, gr[m]['ci'][1])}]" for m in ms]
            lines.append(f"| {g} | {gr['n']} | " + " | ".join(cells) + " |")
        lines += ["", "| metric | overall | best group | worst group | largest gap [95 % CI] | ratio smaller/larger |",
                  "|---|---|---|---|---|---|"]
        for m in ms:
            s = fr["summary"][m]
            lines.append(f"| {m} | {_fmt(m, s['overall'])} | {s['best_group']} ({_fmt(m, s['best'])}) | "
                         f"{s['worst_group']} ({_fmt(m, s['worst'])}) | {_fmt(m, s['gap'])} "
                         f"[{_fmt(m, s['gap_ci'][0])}, {_fmt(m, s['gap_ci'][1])}] | {s['ratio']:.3f} |")
        lines += ["", f"![{feat}]({feat}.png)", ""]
    lines += ["## Confusion matrices", ""]
    for task, c in res["confusion"].items():
        labels = c["labels"]
        lines += [f"### {task}", "", "| true \\ predicted | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for lab, row in zip(labels, c["matrix"]):
            lines.append(f"| {lab} | " + " | ".join(str(v) for v in row[:len(labels)]) + " |")
        lines.append("")
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    paths = {"report": out / "report.md", "json": out / "audit.json"}
    paths.update(_plots(res, out))
    return paths


def _plots(res: dict[str, Any], out: Path) -> dict[str, Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = {}
    for feat, fr in res["features"].items():
        ms = [m for m in res["metrics"] if m in fr["summary"]]
        fig, axes = plt.subplots(1, len(ms), figsize=(3.6 * len(ms), 3.8), squeeze=False)
        groups = list(fr["groups"])
        for ax, m in zip(axes[0], ms):
            v = [fr["groups"][g][m]["value"] for g in groups]
            lo = [fr["groups"][g][m]["value"] - fr["groups"][g][m]["ci"][0] for g in groups]
            hi = [fr["groups"][g][m]["ci"][1] - fr["groups"][g][m]["value"] for g in groups]
            ax.bar(range(len(groups)), v, yerr=[lo, hi], capsize=3, color="tab:blue")
            ax.axhline(fr["summary"][m]["overall"], color="tab:red", lw=1, ls="--")
            ax.set_xticks(range(len(groups)), groups, rotation=60, fontsize=8)
            ax.set_title(m)
        fig.suptitle(f"by {feat} (95 % bootstrap CI; dashed: overall)")
        fig.tight_layout()
        p = out / f"{feat}.png"
        fig.savefig(p, dpi=100)
        plt.close(fig)
        paths[feat] = p
    return paths
