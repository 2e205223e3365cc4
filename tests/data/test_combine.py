"""Joint training data: an extra dataset's labels mapped onto the primary tasks (faceattr.data.combine)."""

import dataclasses

import numpy as np
import pytest

from conftest import FAIRFACE, REPO, UTK
from faceattr.config import ConfigError, ExtraData, config_from_dict, load_config
from faceattr.data.combine import hi_column, level_map, map_to_tasks, parse_range
from faceattr.data.dataset import make_tensor_dataset
from faceattr.data.readers import DataError, read_fairface
from faceattr.data.sources import load_train_val
from faceattr.tasks.task import MISSING, fairface_tasks, nominal_task, utkface_tasks

UTK_AGE, UTK_GENDER, UTK_RACE = utkface_tasks()
FF_AGE, FF_GENDER, FF_RACE = fairface_tasks()
FOLD = {"East Asian": "Asian", "Southeast Asian": "Asian", "Latino_Hispanic": "Others", "Middle Eastern": "Others"}


@pytest.mark.parametrize(
    "text,expected",
    [
        ("20-29", (20, 29)),
        ("(25, 32)", (25, 32)),
        ("35", (35, 35)),
        ("more than 70", (71, float("inf"))),
        ("old", None),
    ],
)
def test_parse_range(text, expected):
    assert parse_range(text) == expected


def test_fairface_groups_become_age_intervals():
    m = level_map(FF_AGE, UTK_AGE)
    levels = UTK_AGE.levels
    assert [(levels[a], levels[b]) for a, b in (m[0], m[3], m[8])] == [(1, 2), (20, 29), (71, 116)]


def test_classes_map_by_name_and_by_the_given_fold():
    assert level_map(FF_GENDER, UTK_GENDER) == {0: (0, 0), 1: (1, 1)}
    m = level_map(FF_RACE, UTK_RACE, FOLD)
    got = {FF_RACE.classes[i]: UTK_RACE.classes[a] for i, (a, _) in m.items()}
    assert got == {
        "White": "White",
        "Black": "Black",
        "Latino_Hispanic": "Others",
        "East Asian": "Asian",
        "Southeast Asian": "Asian",
        "Indian": "Indian",
        "Middle Eastern": "Others",
    }


def test_unmapped_classes_are_named_in_the_error():
    with pytest.raises(DataError, match="East Asian.*label_map"):
        level_map(FF_RACE, UTK_RACE)
    with pytest.raises(DataError, match="label_map"):
        level_map(nominal_task("colour", ("red", "blue")), nominal_task("colour", ("red", "green")))


def test_map_to_tasks_on_real_fairface_rows(fairface_dir):
    t = read_fairface(fairface_dir)
    t = t.subset(np.arange(len(t)) < 200)
    m = map_to_tasks(t, utkface_tasks(), {"race": FOLD})
    assert [x.name for x in m.tasks] == ["age", "gender", "race"]
    f, src = m.frame, t.frame
    for i in range(len(f)):
        lo, hi = UTK_AGE.levels[f.loc[i, "age"]], UTK_AGE.levels[f.loc[i, hi_column("age")]]
        group = FF_AGE.levels[src.loc[i, "age"]]
        expected = (71, 116) if group == "more than 70" else tuple(int(x) for x in group.split("-"))
        if group == "0-2":
            expected = (1, 2)  # UTKFace ages start at 1
        assert (lo, hi) == expected
        assert UTK_GENDER.classes[f.loc[i, "gender"]] == FF_GENDER.classes[src.loc[i, "gender"]].lower()
    with pytest.raises(DataError, match="does not have"):
        map_to_tasks(t, utkface_tasks(), {"hair": {}})


@pytest.mark.slow
def test_joint_train_val_from_real_data(utk_dir, fairface_dir, tmp_path):
    cfg = load_config(
        REPO / "configs" / "utkface-fairface.yaml",
        [
            f"data.root={UTK}",
            f"data.extra=[{{data: 'fairface:{FAIRFACE}', label_map: {{race: {FOLD}}}}}]",
            "data.max_train=30",
            "data.max_val=20",
            "data.image_size=32",
        ],
    )
    train, val = load_train_val(cfg.data, seed=0)
    assert len(train) == 60 and len(val) == 40
    assert set(train.frame["source"]) == {"utkface", "fairface"}
    ff = train.frame[train.frame["source"] == "fairface"]
    assert (ff[hi_column("age")] > ff["age"]).all()  # every FairFace age is an interval of several years
    utk = train.frame[train.frame["source"] == "utkface"]
    assert (utk[hi_column("age")] == utk["age"]).all()
    ds = make_tensor_dataset(val, 32, tmp_path, progress=False)
    assert ds.task_names == ("age", "gender", "race", "age@hi")
    ex = ds.exact_labels()
    assert set(ex) == {"age", "gender", "race"}
    assert (ex["age"][val.frame["source"] == "fairface"] == MISSING).all()
    assert (ex["gender"] != MISSING).all()
    bad = dataclasses.replace(cfg.data, extra=(ExtraData(f"fairface:{FAIRFACE}"),))  # no race fold
    with pytest.raises(DataError, match="race"):
        load_train_val(bad, seed=0)
    with pytest.raises(ConfigError, match="unknown settings"):  # refused when the config is read
        config_from_dict({"data": {"extra": [{"data": f"fairface:{FAIRFACE}", "weight": 2}]}})
