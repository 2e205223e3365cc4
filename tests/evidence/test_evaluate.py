"""Evaluation of a model on another dataset's labels (faceattr.evidence.evaluate): label alignment and label maps."""

import numpy as np
import pytest

from conftest import REPO
from faceattr.data.readers import read_fairface
from faceattr.evidence.evaluate import align_labels, evaluate_checkpoint, parse_label_map
from faceattr.tasks.task import FAIRFACE_AGE_GROUPS, MISSING, age_to_group, utkface_tasks

FOLD = {"East Asian": "Asian", "Southeast Asian": "Asian", "Latino_Hispanic": "Others", "Middle Eastern": "Others"}


def test_fairface_labels_on_an_exact_age_model(fairface_dir):
    t = read_fairface(fairface_dir)
    t = t.subset(np.arange(len(t)) < 300)
    age, gender, race = utkface_tasks()
    plain = align_labels(t, utkface_tasks())
    folded = align_labels(t, utkface_tasks(), {"race": FOLD})
    src_race = [t.tasks[2].classes[v] for v in t.frame["race"]]
    # without a map only the races of the same name count; with the fold every face has a race
    assert all((plain["race"][i] == MISSING) == (r in FOLD) for i, r in enumerate(src_race))
    assert (folded["race"] != MISSING).all()
    assert [race.classes[v] for v in folded["race"]] == [FOLD.get(r, r) for r in src_race]
    # the group midpoint lands in the same group when read back as an age
    groups = [FAIRFACE_AGE_GROUPS[v] for v in t.frame["age"]]
    assert [FAIRFACE_AGE_GROUPS[age_to_group(age.levels[v])] for v in plain["age"]] == groups
    assert [gender.classes[v] for v in plain["gender"]] == [
        g.lower() for g in (t.tasks[1].classes[v] for v in t.frame["gender"])
    ]


def test_parse_label_map():
    assert parse_label_map("{race: {East Asian: Asian}}") == {"race": {"East Asian": "Asian"}}
    assert parse_label_map(str(REPO / "configs" / "utkface-fairface.yaml"), "fairface") == {"race": FOLD}
    assert parse_label_map(None) == {}
    with pytest.raises(ValueError):
        parse_label_map("[1, 2]")
    with pytest.raises(ValueError):
        parse_label_map(str(REPO / "configs" / "utkface.yaml"))


@pytest.mark.slow
def test_evaluate_with_label_map_on_real_fairface(tiny_checkpoint, fairface_dir):
    res = evaluate_checkpoint(tiny_checkpoint, f"fairface:{fairface_dir}", "test", limit=40, label_map={"race": FOLD})
    m = res["metrics"]["overall"]
    assert res["n"] == 40 and res["label_map"] == {"race": FOLD}
    assert m["race"]["n"] == 40 and 0 <= m["race"]["accuracy"] <= 1  # every face counts once the races are folded
    plain = evaluate_checkpoint(tiny_checkpoint, f"fairface:{fairface_dir}", "test", limit=40)
    assert plain["metrics"]["overall"]["race"]["n"] < 40


@pytest.mark.slow
def test_an_onnx_model_is_evaluated_as_predict_runs_it(tiny_checkpoint, synth_utk, tmp_path):
    """`faceattr evaluate --checkpoint m.onnx [--tta-flip]` measures the ONNX path (the shipped default is INT8 ONNX
    with flip TTA): same faces, the torch checkpoint's metrics; flip changes them; the report shows the calibration
    figures (ECE, Brier, interval width)."""
    from faceattr.evidence.evaluate import report_markdown
    from faceattr.training.export import export_onnx

    onnx_path = export_onnx(tiny_checkpoint, tmp_path / "m.onnx")
    data = f"utkface:{synth_utk}"
    for flip in (False, True):
        t = evaluate_checkpoint(tiny_checkpoint, data, "test", tta_flip=flip)["metrics"]["overall"]
        o = evaluate_checkpoint(onnx_path, data, "test", tta_flip=flip)["metrics"]["overall"]
        assert o["age"]["mae"] == pytest.approx(t["age"]["mae"], abs=1e-3)
        for task in ("gender", "race"):
            assert o[task]["accuracy"] == t[task]["accuracy"]
            assert o[task]["ece"] == pytest.approx(t[task]["ece"], abs=1e-4)
    plain = evaluate_checkpoint(onnx_path, data, "test")
    flipped = evaluate_checkpoint(onnx_path, data, "test", tta_flip=True)
    assert plain["metrics"]["overall"]["age"]["mae"] != flipped["metrics"]["overall"]["age"]["mae"]
    md = report_markdown(flipped)
    assert "flip test-time augmentation" in md and "| gender |" in md and "ECE %" in md and "median width" in md


def test_evaluate_on_a_published_protocols_split_file(tiny_checkpoint, synth_utk, tmp_path, capsys):
    """`faceattr evaluate --split-file F`: the test faces are F's (here: the first three photos), not the dataset's
    own protocol's."""
    import json
    from pathlib import Path

    from faceattr.cli.main import main as cli_main

    files = sorted(p.name for p in Path(synth_utk).rglob("*.jpg"))
    split = tmp_path / "split.csv"
    split.write_text(
        "file,split\n" + "".join(f"{f},{'test' if i < 3 else 'train'}\n" for i, f in enumerate(files)),
        encoding="utf-8",
    )
    args = ["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", f"utkface:{synth_utk}", "--json"]
    assert cli_main([*args, "--split-file", str(split)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 3 and res["split_file"] == str(split)
    split.write_text(
        "file,split\n" + "".join(f"{f},{'test' if i >= 2 else 'train'}\n" for i, f in enumerate(files)),
        encoding="utf-8",
    )
    assert cli_main([*args, "--split-file", str(split)]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == len(files) - 2
