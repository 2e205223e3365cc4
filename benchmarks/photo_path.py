"""Accuracy through the photo path, as ``faceattr predict`` runs it: photo in, detection + alignment, the face
nearest the centre, the shipped model's default runtime; one row per model and detector, so that a change of either
is judged on the same photos.

    python benchmarks/photo_path.py [--detectors yunet-ort,yuface] [--models NAME,...] [--fairface DIR] [--limit N]

Photos: UTKFace protocol test (2,291 photos, 200 px; age MAE, gender, race over UTKFace's five classes) and FairFace
official val 1-5,000 (224 px, `scripts/get_fairface.py` puts them in data/fairface-official; age group exact with
the expected age mapped onto FairFace's nine groups, gender, race with FairFace's seven classes folded into the
model's five: East and Southeast Asian -> Asian, Latino_Hispanic and Middle Eastern -> Others; a model with the
seven classes is also scored on them, and one that answers FairFace's age groups gets its UTKFace age as the
groups' mid-points weighted by its probabilities). A photo whose face is not found counts as wrong for every task.
Time: mean milliseconds per photo over the whole set, one row's run after the other's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from _common import RACE_FOLD, SHARED, md_table, write


def photo_sets(fairface: Path, limit: int | None) -> dict[str, pd.DataFrame]:
    """name -> frame with path and the labels (age years or group, gender, race) in the model's terms."""
    from faceattr.data.sources import load_split
    from faceattr.data.spec import parse_data_spec
    from faceattr.runtime.predictor import Predictor

    tasks = {t.name: t for t in Predictor.from_pretrained().tasks}
    utk = load_split(parse_data_spec(f"utkface:{SHARED / 'data' / 'utkface'}"), "test").frame
    sets = {
        "UTKFace test": pd.DataFrame(
            {
                "path": utk["path"],
                "age": [float(tasks["age"].levels[i]) for i in utk["age"]],
                "gender": [tasks["gender"].classes[i] for i in utk["gender"]],
                "race": [tasks["race"].classes[i] for i in utk["race"]],
            }
        )
    }
    csv = fairface / "fairface_label_val.csv"
    if csv.is_file():
        ff = pd.read_csv(csv).head(5000)
        sets["FairFace official val 1-5,000"] = pd.DataFrame(
            {
                "path": [str(fairface / f) for f in ff["file"]],
                "age_group": ff["age"],
                "gender": ff["gender"].str.lower(),
                "race": ff["race"].map(RACE_FOLD),
                "race7": ff["race"],
            }
        )
    else:
        print(f"{csv} not found: FairFace rows left out (python scripts/get_fairface.py)")
    return {k: v.head(limit) if limit else v for k, v in sets.items()}


def _off_centre(box: Any, width: int, height: int) -> float:
    return float(np.hypot((box[0] + box[2] - width) / 2, (box[1] + box[3] - height) / 2))


# a model that answers FairFace's nine age groups gets an age in years, for UTKFace's MAE, as the mean of the
# groups' mid-points weighted by its probabilities (the last group, 70 and over, taken as 70-80)
GROUP_MID = {"0-2": 1.5, "3-9": 6.5, "10-19": 15.0, "20-29": 25.0, "30-39": 35.0, "40-49": 45.0, "50-59": 55.0}
GROUP_MID.update({"60-69": 65.0, "more than 70": 75.0})


def _answers(face: Any) -> dict[str, Any]:
    """The face's age in years and FairFace group, gender, and race over five (and, if the model has them, seven)
    classes."""
    from faceattr.tasks.task import FAIRFACE_AGE_GROUPS, age_to_group

    age = face.attributes["age"]
    if age.probabilities:  # age groups
        years = sum(p * GROUP_MID[g] for g, p in age.probabilities.items())
        group = age.label
    else:
        years = age.value
        group = FAIRFACE_AGE_GROUPS[age_to_group(years)]
    race = face.attributes["race"].label
    seven = "Latino_Hispanic" in face.attributes["race"].probabilities  # FairFace's classes, not UTKFace's
    return {
        "found": True,
        "age": years,
        "age_group": group,
        "gender": face.attributes["gender"].label.lower(),
        "race": RACE_FOLD[race] if seven else race,
        "race7": race if seven else None,
    }


def run(model: str | None, detector: str, frame: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    from faceattr.runtime.predictor import Predictor

    pred = Predictor.from_pretrained(model, detector=detector)
    pred.predict(frame["path"].iloc[0])  # loads the detector
    rows = []
    t0 = time.perf_counter()
    for path in frame["path"]:
        r = next(iter(pred.predict_many([path])))
        face = min(r.faces, key=lambda f: _off_centre(f.box, r.width, r.height)) if r.faces else None
        rows.append(_answers(face) if face else {"found": False, "age": np.nan})
    ms = (time.perf_counter() - t0) / len(frame) * 1000
    out = pd.DataFrame(rows, index=frame.index)
    m: dict[str, Any] = {"model": model or "default", "detector": detector, "photos": len(frame)}
    m["found %"] = round(100 * out["found"].mean(), 2)
    if "age" in frame:
        err = (out["age"] - frame["age"]).abs()
        m["age MAE (found)"] = round(float(err[out["found"]].mean()), 3)
    else:
        m["age group exact %"] = round(100 * float((out["age_group"] == frame["age_group"]).mean()), 2)
    m["gender %"] = round(100 * float((out["gender"] == frame["gender"]).mean()), 2)
    m["race (5) %"] = round(100 * float((out["race"] == frame["race"]).mean()), 2)
    if "race7" in frame and out["race7"].notna().any():
        m["race (7) %"] = round(100 * float((out["race7"] == frame["race7"]).mean()), 2)
    m["ms/photo"] = round(ms, 2)
    return m, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--detectors", default="yunet-ort,yuface")
    ap.add_argument("--models", default="", help="shipped models by name, comma-separated (default: the default)")
    ap.add_argument("--fairface", default="data/fairface-official")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--tag", default="photo-path")
    a = ap.parse_args()
    sets = photo_sets(Path(a.fairface), a.limit)
    results: dict[str, list[dict[str, Any]]] = {}
    md = []
    for name, frame in sets.items():
        rows = []
        for model in a.models.split(",") if a.models else [None]:
            for det in a.detectors.split(","):
                m, _ = run(model, det, frame)
                rows.append(m)
                print(name, m, flush=True)
        results[name] = rows
        cols = list(dict.fromkeys(c for r in rows for c in r))
        md.append(f"## {name}\n\n" + md_table(rows, cols))
    command = (
        "python benchmarks/photo_path.py"
        + (f" --detectors {a.detectors}" if a.detectors != "yunet-ort,yuface" else "")
        + (f" --models {a.models}" if a.models else "")
        + (f" --tag {a.tag}" if a.tag != "photo-path" else "")
        + (f" --limit {a.limit}" if a.limit else "")
    )
    write(a.tag, {"sets": results}, __doc__.split("\n\n")[0].replace("\n", " ") + "\n\n" + "\n\n".join(md), command)


if __name__ == "__main__":
    main()
