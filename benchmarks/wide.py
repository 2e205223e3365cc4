"""Photos with background and other people: the FairFace wide-margin set (540 photos, 448 px).

    python benchmarks/wide.py [--detector yunet-ort|yuface|dlib|yunet|yunet-dlib] [--runtime R] [--no-tta-flip]
        [--limit N]

The default (``--detector yunet-ort``, ``--runtime auto``, flip TTA on) is ``faceattr predict``'s default path.

For each wide photo the labelled face is the detected face nearest the centre; it counts as found when that
face's centre lies within 15 % of the side from the photo's centre. Its prediction (shipped model, detection +
alignment) is compared with the prediction on the matching tight FairFace crop (``source`` column), both
through the same detection + alignment and, as a second reference, with the tight crop fed as-is
(``--no-detect``). Accuracy against the labels: gender, and age mapped to the FairFace groups; race with the
7 FairFace classes folded into the model's 5 UTKFace classes (East and Southeast Asian -> Asian; Latino and
Middle Eastern -> Others), an approximation stated as such.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from _common import RACE_FOLD, RESULTS, SHARED, md_table, write


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--detector", default="yunet-ort")
    ap.add_argument("--runtime", default="auto", help="for the shipped model: auto (INT8 ONNX) | onnx | torch")
    ap.add_argument("--limit", type=int)
    ap.add_argument(
        "--tta-flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average each face with its mirror image (default: as faceattr predict: on for the shipped model)",
    )
    ap.add_argument("--model", help="a faceattr checkpoint or ONNX file (default: the shipped model)")
    ap.add_argument("--tag", default="", help="suffix of the result file names")
    a = ap.parse_args()
    from faceattr.runtime.predictor import Predictor
    from faceattr.tasks.task import FAIRFACE_AGE_GROUPS, age_to_group
    from faceattr.vision.align import nearest_to_center
    from faceattr.vision.image import load_image

    wide_dir = SHARED / "data" / "fairface-wide"
    labels = pd.read_csv(wide_dir / "labels.csv")
    if a.limit:
        labels = labels.head(a.limit)
    yunet = SHARED / "models" / "face_detection_yunet.onnx"
    p = Predictor.load(
        a.model,
        threads=2,
        runtime=a.runtime,
        detector=a.detector,
        yunet_model=str(yunet) if a.detector.startswith("yunet") else None,
        tta_flip=a.tta_flip,
    )

    def centre_face(rgb: np.ndarray):
        faces, chips = p.faces_and_chips(rgb)
        f = nearest_to_center(faces, rgb.shape[1], rgb.shape[0])
        if f is None:
            return None, None, len(faces)
        i = faces.index(f)
        h, w = rgb.shape[:2]
        ok = np.hypot(f.center[0] - w / 2, f.center[1] - h / 2) <= 0.15 * max(w, h)
        return (p.predict_chips(chips[i : i + 1])[0] if ok else None), f, len(faces)

    rows = []
    for _, r in labels.iterrows():
        wide = load_image(wide_dir / r["file"])
        tight = load_image(SHARED / "data" / "fairface" / r["source"])
        aw, _, nfaces = centre_face(wide)
        at, _, _ = centre_face(tight)
        an = p.predict(tight, detect=False).faces[0].attributes
        rows.append(
            {
                "file": r["file"],
                "faces_in_photo": nfaces,
                "found": aw is not None,
                "tight_found": at is not None,
                "age_wide": aw["age"].value if aw else np.nan,
                "age_tight": at["age"].value if at else np.nan,
                "age_tight_nodetect": an["age"].value,
                "gender_wide": aw["gender"].label if aw else None,
                "gender_tight": at["gender"].label if at else None,
                "gender_tight_nodetect": an["gender"].label,
                "p_female_wide": aw["gender"].probabilities.get("female", np.nan) if aw else np.nan,
                "p_female_tight": at["gender"].probabilities.get("female", np.nan) if at else np.nan,
                "race_wide": aw["race"].label if aw else None,
                "true_age_group": FAIRFACE_AGE_GROUPS.index(r["age"]),
                "true_gender": r["gender"].lower(),
                "true_race5": RACE_FOLD[r["race"]],
            }
        )
    df = pd.DataFrame(rows)
    n = len(df)
    found = df["found"]
    both = found & df["tight_found"]
    agree = [
        {
            "comparison": "wide (aligned) vs tight (aligned)",
            "pairs": int(both.sum()),
            "gender agreement %": 100 * float((df.loc[both, "gender_wide"] == df.loc[both, "gender_tight"]).mean()),
            "mean abs age difference (years)": float(
                (df.loc[both, "age_wide"] - df.loc[both, "age_tight"]).abs().mean()
            ),
        },
        {
            "comparison": "wide (aligned) vs tight (as-is, --no-detect)",
            "pairs": int(found.sum()),
            "gender agreement %": 100
            * float((df.loc[found, "gender_wide"] == df.loc[found, "gender_tight_nodetect"]).mean()),
            "mean abs age difference (years)": float(
                (df.loc[found, "age_wide"] - df.loc[found, "age_tight_nodetect"]).abs().mean()
            ),
        },
    ]
    f = df[found]
    g_pred = np.array([age_to_group(x) for x in f["age_wide"]])
    acc = [
        {
            "faces": int(len(f)),
            "gender acc %": 100 * float((f["gender_wide"] == f["true_gender"]).mean()),
            "age group exact %": 100 * float((g_pred == f["true_age_group"]).mean()),
            "age group 1-off %": 100 * float((np.abs(g_pred - f["true_age_group"]) <= 1).mean()),
            "race (folded to 5) acc %": 100 * float((f["race_wide"] == f["true_race5"]).mean()),
        }
    ]
    det = [
        {
            "detector": p.detector.name,
            "photos": n,
            "labelled face found + aligned": int(found.sum()),
            "found %": 100 * float(found.mean()),
            "photos with >1 face": int((df["faces_in_photo"] > 1).sum()),
            "tight crops found %": 100 * float(df["tight_found"].mean()),
        }
    ]
    md = "\n\n".join(
        [
            "## Detection\n\n" + md_table(det, list(det[0])),
            "## Agreement with the matching tight crop\n\n" + md_table(agree, list(agree[0])),
            "## Accuracy of the wide-photo predictions against the labels\n\n" + md_table(acc, list(acc[0])),
        ]
    )
    name = (
        f"wide-{p.detector.name}"
        + (f"-{a.runtime}" if a.runtime != "auto" else "")
        + {None: "", True: "-flip", False: "-noflip"}[a.tta_flip]
        + (f"-{a.tag}" if a.tag else "")
    )
    df.to_csv(RESULTS / f"{name}-rows.csv", index=False)  # one row per photo, to look at the disagreements
    write(
        name,
        {"detection": det, "agreement": agree, "accuracy": acc},
        md,
        f"python benchmarks/wide.py --detector {a.detector}"
        + (f" --runtime {a.runtime}" if a.runtime != "auto" else "")
        + {None: "", True: " --tta-flip", False: " --no-tta-flip"}[a.tta_flip]
        + (f" --limit {a.limit}" if a.limit else "")
        + (f" --model {a.model}" if a.model else "")
        + (f" --tag {a.tag}" if a.tag else ""),
    )


if __name__ == "__main__":
    main()
