"""Is UTKFace race limited by the shipped model's race head or by its features? A linear-probe bound.

    python benchmarks/probes/race_probe.py [--model M] [--train-limit 6000] [--sizes 144,160]

The race branch's pooled features (float32, averaged with the mirrored face's, as the default path's flip TTA
does) of UTKFace protocol v1 train/val/test faces. A multinomial logistic regression is re-fitted on them using
UTKFace labels only (scikit-learn; its regularisation chosen on validation, never on test) and compared on test
with the shipped head, which was trained on UTKFace and FairFace together. If even a head fitted to UTKFace's own
definition of the five races stays short of a target, the features (input size, network), not the head or the
mixing of the two datasets' race definitions, are what limits race accuracy. ``--sizes`` also feeds the same
network larger chips than it was trained on (validation only): whether a larger input helps without a retrain.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/_common.py
from _common import SHARED, md_table, write  # noqa: E402
from faceattr.evidence.evaluate import split_data
from faceattr.models.checkpoint import load_model
from faceattr.models.mtl import MultiTaskNet
from faceattr.runtime.policy import SHIPPED_MODEL, shown_path
from faceattr.runtime.tta import mirrored_mean
from faceattr.training.inference import normalize


def branch_features(model: MultiTaskNet, meta: Any, data: str, split: str, limit: int | None) -> dict[str, Any]:
    """Flip-averaged race-branch features, the shipped head's predictions, the race labels and the photo paths of
    the split's race-labelled faces."""
    _, table, labels, ds = split_data(data, split, meta, limit)
    branch, head = model.branches["race"], cast(torch.nn.Module, model.heads["race"])

    def race(x: torch.Tensor) -> dict[str, torch.Tensor]:  # the trunk and the race branch only
        return {"f": torch.flatten(model.pool(branch(model.forward_shared(x))), 1)}

    feats: list[np.ndarray] = []
    with torch.inference_mode():
        for x, _ in ds.batches(256, shuffle=False):
            xb = normalize(x, meta.mean, meta.std)
            feats.append(mirrored_mean(race, xb, lambda t: torch.flip(t, dims=[3]), torch.cat)["f"].numpy())
        feat = np.concatenate(feats)
        logits = head(torch.from_numpy(feat)).numpy()
    keep = labels["race"] >= 0
    paths = table.frame["path"].astype(str).to_numpy()
    return {"x": feat[keep], "y": labels["race"][keep], "head": logits[keep].argmax(1), "paths": paths[keep]}


def race_model(path: str, threads: int) -> tuple[MultiTaskNet, Any, list[str], str]:
    """The multi-task model in eval mode, its metadata, its race classes and the UTKFace data spec."""
    torch.set_num_threads(threads)
    net, meta = load_model(path)
    model = cast(MultiTaskNet, net)
    model.eval()
    classes = list(next(t for t in meta.tasks if t.name == "race").labels)
    return model, meta, classes, f"utkface:{SHARED / 'data' / 'utkface'}"


def scores(pred: np.ndarray, y: np.ndarray, classes: list[str]) -> dict[str, Any]:
    others = classes.index("Others") if "Others" in classes else None
    row: dict[str, Any] = {"accuracy": round(float((pred == y).mean()) * 100, 2), "faces": int(len(y))}
    if others is not None:
        row["recall of Others"] = round(float((pred[y == others] == others).mean()) * 100, 1)
    return row


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=shown_path(SHIPPED_MODEL))
    ap.add_argument("--train-limit", type=int, default=6000, help="UTKFace train faces to re-fit on (0: none)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="144,160", help="other input sizes to feed the same network, on val")
    a = ap.parse_args()
    model, meta, classes, data = race_model(a.model, a.threads)
    val = branch_features(model, meta, data, "val", None)
    test = branch_features(model, meta, data, "test", None)
    grid = (0.01, 0.03, 0.1, 0.3, 1.0)
    rows = [
        {"race head": "shipped (UTKFace + FairFace, trained end to end)", "fitted on": "-", "C": "-"}
        | {"val accuracy": scores(val["head"], val["y"], classes)["accuracy"]}
        | scores(test["head"], test["y"], classes)
    ]
    # 1) fitted on validation, C by 5-fold cross-validation there
    cv = {
        c: float(cross_val_score(LogisticRegression(C=c, max_iter=5000), val["x"], val["y"], cv=5).mean()) for c in grid
    }
    c_best = max(cv, key=lambda c: cv[c])
    clf = LogisticRegression(C=c_best, max_iter=5000).fit(val["x"], val["y"])
    rows.append(
        {"race head": "re-fitted, UTKFace labels only", "fitted on": f"val ({len(val['y'])})", "C": c_best}
        | {"val accuracy": f"{cv[c_best] * 100:.2f} (5-fold)"}
        | scores(clf.predict(test["x"]), test["y"], classes)
    )
    # 2) fitted on (part of) train, C chosen on validation
    if a.train_limit:
        tr = branch_features(model, meta, data, "train", None)
        idx = np.random.default_rng(0).permutation(len(tr["y"]))[: a.train_limit]
        fits = {c: LogisticRegression(C=c, max_iter=5000).fit(tr["x"][idx], tr["y"][idx]) for c in grid}
        accs = {c: float((f.predict(val["x"]) == val["y"]).mean()) for c, f in fits.items()}
        c_tr = max(accs, key=lambda c: accs[c])
        rows.append(
            {"race head": "re-fitted, UTKFace labels only", "fitted on": f"train ({len(idx)})", "C": c_tr}
            | {"val accuracy": round(accs[c_tr] * 100, 2)}
            | scores(fits[c_tr].predict(test["x"]), test["y"], classes)
        )
    # 3) the same network fed larger chips than it was trained on (does a larger input help without a retrain?)
    sizes = [meta.input_size] + [int(x) for x in a.sizes.split(",") if x.strip()]
    by_size = []
    for size in sizes:
        d = (
            val
            if size == meta.input_size
            else branch_features(model, replace(meta, input_size=size), data, "val", None)
        )
        by_size.append({"input px": size, "val race accuracy": round(float((d["head"] == d["y"]).mean()) * 100, 2)})
    cols = ["race head", "fitted on", "C", "val accuracy", "accuracy", "recall of Others", "faces"]
    md = (
        f"Model `{a.model}`; race-branch features averaged with the mirrored face's (float32); the shipped head's "
        "raw argmax (without the calibrator's class biases). UTKFace protocol v1; `accuracy` and `recall of Others` "
        "on **test** (never fitted on or used to choose).\n\n"
        + md_table(rows, cols)
        + f"\n\n## The same network fed larger chips (trained at {meta.input_size} px; UTKFace val, shipped head)\n\n"
        + md_table(by_size, ["input px", "val race accuracy"])
    )
    changed = [f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items() if k != "threads" and v != ap.get_default(k)]
    cmd = " ".join(["python benchmarks/probes/race_probe.py", *changed])
    write(
        "race-probe",
        {"rows": rows, "cv_val": cv, "by_input_size": by_size},
        md,
        cmd,
        results=Path(__file__).resolve().parent / "results",
    )


if __name__ == "__main__":
    main()
