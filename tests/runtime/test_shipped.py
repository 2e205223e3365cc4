"""The model that ships with faceattr: its file, its metadata, its accuracy on real faces, the README's main job."""

import json

import numpy as np
import pytest

from conftest import UTK
from faceattr.cli.main import main as cli
from faceattr.models.checkpoint import read_meta
from faceattr.runtime.policy import SHIPPED_MODEL, default_runtime, shipped_path, shown_path
from faceattr.runtime.predictor import Predictor


def test_shipped_file_and_metadata():
    assert SHIPPED_MODEL.is_file() and SHIPPED_MODEL.stat().st_size <= 15e6
    meta = read_meta(SHIPPED_MODEL)
    assert meta.task_names == ("age", "gender", "race")
    assert meta.input_size == 128 and len(meta.mean) == len(meta.std) == 3
    assert {"dlib", "yunet", "yunet-dlib"} <= set(meta.alignment)
    tm = meta.extra["test_metrics"]
    assert tm["n"] == 2291 and tm["age_mae"] < 6 and tm["gender_accuracy"] > 0.9  # measured, stored by the build
    extra = meta.extra["config"]["data"]["extra"]
    assert extra[0]["data"].startswith("fairface:") and "race" in extra[0]["label_map"]
    assert (SHIPPED_MODEL.parent / "README.md").is_file()  # the model card


def test_shipped_model_on_real_test_faces(utk_dir):
    """40 UTKFace test crops, fed as crops: the trained weights, not a fresh network, must be in the file."""
    from faceattr.data.sources import load_split
    from faceattr.data.spec import parse_data_spec

    t = load_split(parse_data_spec(f"utkface:{UTK}"), "test", limit=40, seed=3)
    p = Predictor.from_pretrained(threads=1)
    res = [r.faces[0].attributes for r in p.predict_many(list(t.frame["path"]), detect=False)]
    ages = np.array([a["age"].value for a in res])
    true_age = t.frame["age_years"].to_numpy()
    gender_ok = np.mean([a["gender"].label == ("male", "female")[g] for a, g in zip(res, t.frame["gender"])])
    assert np.abs(ages - true_age).mean() < 9 and gender_ok >= 0.8


def test_readme_main_job_runs_on_the_bundled_example(capsys):
    pytest.importorskip("skimage")
    assert cli(["-q", "predict", "--example"]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["file"].endswith("astronaut.png") and rec["num_faces"] == 1
    face = rec["faces"][0]
    lo, hi = face["age"]["interval"]
    assert lo <= face["age"]["value"] <= hi
    assert abs(sum(face["gender"]["probabilities"].values()) - 1) < 1e-3
    assert set(face["race"]["probabilities"]) == {"White", "Black", "Asian", "Indian", "Others"}


@pytest.mark.slow
def test_evaluate_without_a_checkpoint_measures_predicts_default_path(utk_dir, tmp_path, capsys):
    """`faceattr evaluate --data ...` with no --checkpoint judges what `faceattr predict` runs: the shipped INT8
    model with flip TTA; --no-tta-flip turns the flip off."""
    assert cli(["-q", "evaluate", "--data", f"utkface:{UTK}", "--limit", "60", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["checkpoint"] == shown_path(shipped_path(default_runtime()))
    assert res["tta_flip"] is True and res["n"] == 60
    assert res["metrics"]["overall"]["gender"]["accuracy"] > 0.8
    assert cli(["-q", "evaluate", "--data", f"utkface:{UTK}", "--limit", "60", "--json", "--no-tta-flip"]) == 0
    assert json.loads(capsys.readouterr().out)["tta_flip"] is False


@pytest.mark.slow
def test_audit_without_a_checkpoint_audits_predicts_default_path(utk_dir, tmp_path, capsys):
    out = tmp_path / "audit"
    assert cli(["-q", "audit", "--data", f"utkface:{UTK}", "--limit", "40", "--n-boot", "10", "--out", str(out)]) == 0
    res = json.loads((out / "audit.json").read_text())
    assert res["checkpoint"] == shown_path(shipped_path(default_runtime())) and res["tta_flip"] is True
    assert "with flip TTA" in (out / "report.md").read_text()


def test_the_shipped_onnx_files_know_their_fairface_label_map():
    """An ONNX file carries the data protocol instead of the training config; both give the same FairFace map."""
    from faceattr.evidence.evaluate import model_label_map
    from faceattr.runtime.backends import OnnxBackend
    from faceattr.runtime.policy import SHIPPED_INT8

    fold = {"East Asian": "Asian", "Southeast Asian": "Asian", "Latino_Hispanic": "Others", "Middle Eastern": "Others"}
    assert model_label_map(read_meta(SHIPPED_MODEL), "fairface") == {"race": fold}
    assert model_label_map(OnnxBackend(SHIPPED_INT8).meta, "fairface") == {"race": fold}
    assert model_label_map(OnnxBackend(SHIPPED_INT8).meta, "utkface") is None


def test_the_licence_clean_model_by_name():
    """`faceattr-fairface-mobilenetv2`: listed as usable commercially, trained on FairFace alone, and chosen by name
    it answers FairFace's seven races and age groups on the default path (INT8 + flip where the CPU allows)."""
    from faceattr.cli.predict import example_photo
    from faceattr.runtime.catalog import list_shipped, shipped
    from faceattr.runtime.predictor import Predictor

    name = "faceattr-fairface-mobilenetv2"
    m = shipped(name)
    assert m.commercial_use and "CC BY" in m.licence_detail and not any("UTKFace" in t for t in m.trained_on)
    assert len(list_shipped()) >= 2
    p = Predictor.from_pretrained(name)
    assert p.tta_flip  # the default path of a shipped model
    face = p.predict(example_photo()).faces[0]
    assert set(face.race.probabilities) == {
        "White",
        "Black",
        "Latino_Hispanic",
        "East Asian",
        "Southeast Asian",
        "Indian",
        "Middle Eastern",
    }
    assert face.age.label in face.age.probabilities and len(face.age.probabilities) == 9
    assert abs(sum(face.race.probabilities.values()) - 1) < 1e-4
