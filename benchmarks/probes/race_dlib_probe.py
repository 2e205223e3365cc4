"""Would another offline network's features lift UTKFace race past 87 %? dlib's face-recognition ResNet, probed.

    python benchmarks/probes/race_dlib_probe.py [--model M] [--train-limit 0] [--jitters 0]

The only pretrained networks within reach offline are MobileNetV2 (ImageNet, what faceattr is built on) and the face
networks inside registry wheels: MTCNN (small detectors, `facenet-pytorch`) and dlib's face-recognition ResNet (29
layers, a 128-d identity embedding trained on ~3 million faces; `face-recognition-models`, MIT package licence).
Identity embeddings carry race, so before a larger backbone or a second network is worth anything, this measures the
bound a linear head gets from them: multinomial logistic regressions fitted with UTKFace labels on (a) the shipped
model's flip-averaged race-branch features (as ``race_probe.py``), (b) dlib's embedding of the same face (dlib HOG +
5-point landmarks, dlib's own 150 px chip; the photo's centre when HOG finds no face), (c) both, standardised.
Fitted on UTKFace validation (regularisation by 5-fold cross-validation there; ``--train-limit N`` fits on N train
faces instead, C chosen on validation); reported on **test** with a paired bootstrap of (c) minus (a). The cost of
the second network is timed in the same run, photo by photo in turns with ``Predictor.from_pretrained()`` (the
default path, detection included) on ``--time-n`` test photos. Embeddings are cached under ``cache/race-dlib/``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/_common.py
from race_probe import branch_features, race_model, scores

from _common import md_table, write  # noqa: E402
from faceattr.evidence.stats import paired_bootstrap
from faceattr.runtime.policy import SHIPPED_MODEL, shown_path
from faceattr.vision.detectors.dlib import _face_recognition_models_dir
from faceattr.vision.image import load_image

CACHE = Path(__file__).resolve().parents[1] / "cache" / "race-dlib"


class DlibEmbedder:
    """dlib HOG + 5-point landmarks + the face-recognition ResNet: one 128-d embedding per photo's largest face."""

    def __init__(self, jitters: int) -> None:
        import dlib

        models = _face_recognition_models_dir()
        self.det = dlib.get_frontal_face_detector()
        self.sp = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.rec = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        self.dlib, self.jitters = dlib, jitters

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, bool]:
        """(embedding, whether HOG missed the face and the photo's centre stood in for it)."""
        found = list(self.det(rgb, 1))
        if found:
            rect = max(found, key=lambda r: r.width() * r.height())
        else:  # UTKFace photos are face-centred crops: the centre stands in for the missed face
            h, w = rgb.shape[:2]
            rect = self.dlib.rectangle(int(0.2 * w), int(0.2 * h), int(0.8 * w), int(0.8 * h))
        shape = self.sp(rgb, rect)
        v = np.asarray(self.rec.compute_face_descriptor(rgb, shape, self.jitters), dtype=np.float32)
        return v, not found


def with_embeddings(emb: DlibEmbedder, faces: dict[str, Any], name: str) -> dict[str, Any]:
    """``faces`` (from ``branch_features``) plus dlib's embeddings of their photos and the faces HOG missed; computed
    once per set of photos and cached as ``name``."""
    paths = [str(p) for p in faces["paths"]]
    cache = CACHE / f"utkface-{name}-j{emb.jitters}.npz"
    if cache.is_file():
        got = np.load(cache, allow_pickle=False)
        if list(got["paths"]) == paths:
            return faces | {"dlib": got["x"], "missed": got["missed"]}
    out = [emb(load_image(p)) for p in tqdm(paths, desc=f"dlib embeddings ({name})")]
    x, missed = np.stack([v for v, _ in out]), np.array([m for _, m in out])
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, x=x, missed=missed, paths=np.array(paths))
    tmp.replace(cache)
    return faces | {"dlib": x, "missed": missed}


def timing(emb: DlibEmbedder, paths: list[str], threads: int, missed: int) -> dict[str, Any]:
    """Median ms per photo of the default path and of dlib's embedding, timed in turns on the same photos."""
    from faceattr.runtime.predictor import Predictor

    pred = Predictor.from_pretrained(threads=threads)
    photos = [load_image(p) for p in paths]
    pred.predict(photos[0]), emb(photos[0])  # warm-up
    ours, theirs = [], []
    for im in photos:
        t0 = time.perf_counter()
        pred.predict(im)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        emb(im)
        theirs.append(time.perf_counter() - t0)
    a, b = float(np.median(ours)) * 1000, float(np.median(theirs)) * 1000
    return {
        "photos": len(photos),
        "faceattr default path (all three tasks)": round(a, 1),
        "dlib HOG + landmarks + embedding": round(b, 1),
        "dlib / default path": round(b / a, 2),
        "HOG missed on UTKFace val + test (centre used)": missed,
    }


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=shown_path(SHIPPED_MODEL))
    ap.add_argument("--train-limit", type=int, default=0, help="fit on this many UTKFace train faces (0: on val)")
    ap.add_argument("--jitters", type=int, default=0, help="dlib's num_jitters (0: one pass per face)")
    ap.add_argument("--time-n", type=int, default=100, help="test photos to time both estimators on")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    model, meta, classes, data = race_model(a.model, a.threads)
    emb = DlibEmbedder(a.jitters)
    val = with_embeddings(emb, branch_features(model, meta, data, "val", None), "val")
    test = with_embeddings(emb, branch_features(model, meta, data, "test", None), "test")
    if a.train_limit:  # dlib embeds only the drawn train faces
        tr = branch_features(model, meta, data, "train", None)
        idx = np.random.default_rng(0).permutation(len(tr["y"]))[: a.train_limit]
        fit_set = with_embeddings(emb, {k: v[idx] for k, v in tr.items()}, f"train{len(idx)}")
    grid = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    views = {
        "shipped model's race-branch features (1280-d)": lambda d: d["x"],
        "dlib face-recognition embedding (128-d)": lambda d: d["dlib"],
        "both, concatenated": lambda d: np.concatenate([d["x"], d["dlib"]], 1),
    }

    def clf(c: float) -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))

    rows: list[dict[str, Any]] = [
        {"features": "shipped race head (no re-fit)", "fitted on": "-", "C": "-"}
        | {"val accuracy": scores(val["head"], val["y"], classes)["accuracy"]}
        | scores(test["head"], test["y"], classes)
    ]
    preds: dict[str, np.ndarray] = {}
    for name, view in views.items():
        if a.train_limit:
            fits = {c: clf(c).fit(view(fit_set), fit_set["y"]) for c in grid}
            accs = {c: float((f.predict(view(val)) == val["y"]).mean()) for c, f in fits.items()}
            c_best = max(accs, key=lambda c: accs[c])
            fitted, where, val_acc = fits[c_best], f"train ({len(idx)})", round(accs[c_best] * 100, 2)
        else:
            cv = {c: float(cross_val_score(clf(c), view(val), val["y"], cv=5).mean()) for c in grid}
            c_best = max(cv, key=lambda c: cv[c])
            fitted = clf(c_best).fit(view(val), val["y"])
            where, val_acc = f"val ({len(val['y'])})", f"{cv[c_best] * 100:.2f} (5-fold)"
        preds[name] = fitted.predict(view(test))
        rows.append(
            {"features": name, "fitted on": where, "C": c_best, "val accuracy": val_acc}
            | scores(preds[name], test["y"], classes)
        )
    ours, both = (preds[k] for k in (next(iter(views)), "both, concatenated"))
    d, lo, hi = paired_bootstrap((both == test["y"]).astype(float), (ours == test["y"]).astype(float), True)
    cost = timing(emb, list(test["paths"][: a.time_n]), a.threads, int(val["missed"].sum() + test["missed"].sum()))
    cols = ["features", "fitted on", "C", "val accuracy", "accuracy", "recall of Others", "faces"]
    md = (
        f"Model `{a.model}`. UTKFace protocol v1; multinomial logistic regression on standardised features, UTKFace "
        "labels only; `accuracy` and `recall of Others` on **test** (never fitted on or used to choose). dlib: HOG "
        f"(upsample 1) + 5-point landmarks + `dlib_face_recognition_resnet_model_v1`, num_jitters {a.jitters}.\n\n"
        + md_table(rows, cols)
        + f"\n\nBoth vs the shipped model's features alone, paired bootstrap over the {len(test['y'])} test faces: "
        f"**{d * 100:+.2f} points [{lo * 100:+.2f}, {hi * 100:+.2f}]** (95 %).\n\n"
        + "\n\nCost per 200 px test photo, the two taking turns photo by photo (median ms; nothing else running):\n\n"
        + md_table([cost], list(cost))
    )
    changed = [f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items() if k != "threads" and v != ap.get_default(k)]
    cmd = " ".join(["python benchmarks/probes/race_dlib_probe.py", *changed])
    write(
        "race-dlib-probe",
        {"rows": rows, "both_minus_ours": [d, lo, hi], "cost": cost},
        md,
        cmd,
        results=Path(__file__).resolve().parent / "results",
    )


if __name__ == "__main__":
    main()
