"""What a user meets first: the one-line Python call, attribute access and short reprs, colour order, records and
DataFrames; the command line's shared vocabulary, help with examples and defaults, one-line usage errors."""

from __future__ import annotations

import argparse
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import faceattr
from faceattr.cli.main import ALIASES, EXAMPLES, build_parser, main
from faceattr.cli.predict import example_photo


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.asarray(Image.open(example_photo()).convert("RGB"))


def test_analyze_is_the_default_path_in_one_call(rgb):
    res = faceattr.analyze(example_photo())
    ref = faceattr.Predictor.from_pretrained().predict(example_photo())
    assert res.to_dict()["faces"] == ref.to_dict()["faces"]
    assert faceattr.analyze(rgb).faces[0].to_dict() == ref.faces[0].to_dict()


def test_attributes_read_as_fields_and_as_keys_with_short_reprs(rgb):
    face = faceattr.analyze(rgb).faces[0]
    assert face.age is face["age"] and face.gender is face["gender"]
    assert isinstance(face.age.value, float) and face.age.interval[0] < face.age.value < face.age.interval[1]
    assert face.gender.label in ("male", "female") and abs(sum(face.race.probabilities.values()) - 1) < 1e-3
    with pytest.raises(AttributeError):
        face.height  # noqa: B018 - not a task of the model
    text = repr(face)
    assert text.startswith("FaceResult(box=(") and "age('" in text and "np.float64" not in text and len(text) < 200
    assert repr(faceattr.analyze(rgb)).endswith("512x512, 1 face(s))")
    p = repr(faceattr.Predictor.from_pretrained())
    assert "runtime=" in p and "tta_flip=" in p and "model=" in p


def test_bgr_arrays_are_said_so_and_give_the_rgb_answer(rgb):
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    want = faceattr.analyze(rgb).faces[0].to_dict()
    assert faceattr.analyze(bgr, channels="bgr").faces[0].to_dict() == want
    assert faceattr.analyze(bgr).faces[0].to_dict() != want  # the same array read as RGB answers otherwise
    with pytest.raises(faceattr.FaceattrError, match="channels"):
        faceattr.analyze(rgb, channels="rbg")


def test_records_and_pandas_have_one_row_per_face():
    pd = pytest.importorskip("pandas")
    res = faceattr.analyze(example_photo())
    recs = res.to_records()
    assert len(recs) == 1 and recs[0]["face"] == 0 and recs[0]["age"] == res.faces[0].age.label
    assert {"x0", "y0", "x1", "y1", "age_value", "age_low", "age_high", "gender_p_female"} <= set(recs[0])
    df = res.to_pandas()
    assert isinstance(df, pd.DataFrame) and len(df) == 1 and df.loc[0, "gender"] == res.faces[0].gender.label


def test_none_is_not_an_image():
    p = faceattr.Predictor.from_pretrained()
    with pytest.raises(faceattr.FaceattrError, match="NoneType is not an image"):
        p.predict(None)  # type: ignore[arg-type]


def _commands() -> dict[str, argparse.ArgumentParser]:
    ap = build_parser()
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    return {n: p for n, p in sub.choices.items() if n not in ALIASES}


def test_every_command_has_examples_and_every_option_help():
    cmds = _commands()
    assert set(cmds) == set(EXAMPLES)
    for name, p in cmds.items():
        text = p.format_help()
        assert "examples:" in text and f"faceattr {name}" in text.split("examples:")[1], name
        for act in p._actions:
            assert act.help, f"faceattr {name} {act.option_strings or act.dest}: no help text"
        opts = {s for a in p._actions for s in a.option_strings}
        assert "--checkpoint" not in opts or "--model" in opts, name  # one vocabulary: --model everywhere
        assert not ({"--out", "--output"} & opts) or "-o" in opts or name == "train", name
    assert "(default: 8000)" in cmds["serve"].format_help()


def test_version_and_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"faceattr {faceattr.__version__}"
    assert main(["predict"]) == 2  # no photo: a usage error, not the bundled example
    assert "--example" in capsys.readouterr().err
    for argv in (["serve", "--port", "99999"], ["serve", "--port", "http"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1 and "1 to 65535" in err


def test_old_names_still_work():
    out = subprocess.run(
        [sys.executable, "-m", "faceattr", "calibrate", "--help"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0 and "fit-alignment" in out.stdout
    parsed = build_parser().parse_args(["evaluate", "--checkpoint", "m.onnx", "--data", "utkface:x"])
    assert parsed.checkpoint == "m.onnx"
    assert build_parser().parse_args(["predict", "x.jpg", "-O", "r.jsonl"]).output == "r.jsonl"


def test_the_readme_is_short_and_says_the_licence_first():
    from conftest import REPO

    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    first = "\n".join(text.splitlines()[:40])
    assert "non-commercial" in first.lower()  # the default model's licence
    assert "faceattr-fairface-mobilenetv2" in first and "CC BY" in first  # and the model a product may use


def test_generated_figures_are_up_to_date():
    from conftest import REPO

    out = subprocess.run(
        [sys.executable, str(REPO / "scripts/make_docs.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
