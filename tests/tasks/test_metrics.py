"""Metrics by hand: the numbers that pick best.safetensors and fill every report."""

from __future__ import annotations

import numpy as np
import pytest

from faceattr.tasks.metrics import compute_metrics, headline, selection_score
from faceattr.tasks.task import MISSING, nominal_task, utkface_tasks


def test_metrics_of_four_hand_made_faces():
    age, gender, race = utkface_tasks()
    # true ages 20, 30, 40, 70 (level index = age - 1); estimates 22, 30, 35.4, 60
    labels = {
        "age": np.array([19, 29, 39, 69]),
        "gender": np.array([0, 1, 1, MISSING]),  # the last face has no gender label
        "race": np.array([0, 0, 2, 2]),
    }
    preds = {
        "age": {
            "value": np.array([22.0, 30.0, 35.4, 60.0]),
            "low": np.array([18.0, 25.0, 30.0, 50.0]),
            "high": np.array([26.0, 35.0, 39.0, 75.0]),
        },
        "gender": {"index": np.array([0, 0, 1, 0]), "probs": np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [1, 0]])},
        "race": {"index": np.array([0, 1, 2, 2])},
    }
    m = compute_metrics([age, gender, race], preds, labels)
    a = m["overall"]["age"]
    assert a["n"] == 4 and a["mae"] == pytest.approx((2 + 0 + 4.6 + 10) / 4)
    # rounded estimates 22, 30, 35, 60: errors 2, 0, 5, 10
    assert a["cs"]["0"] == 0.25 and a["cs"]["2"] == 0.5 and a["cs"]["5"] == 0.75 and a["cs"]["10"] == 1.0
    # groups: 20->20-29, 22->20-29 | 30/30 | 40->40-49, 35.4->30-39 | 70->more than 70, 60->60-69
    assert a["group_exact"] == 0.5 and a["group_1off"] == 1.0
    assert a["interval_coverage"] == 0.75  # 20 in [18, 26], 30 in [25, 35], 70 in [50, 75]; 40 > 39
    g = m["overall"]["gender"]
    assert g["n"] == 3 and g["accuracy"] == pytest.approx(2 / 3)
    assert g["confusion"] == [[1, 0], [1, 1]]
    r = m["overall"]["race"]
    assert r["accuracy"] == 0.75 and r["macro_f1"] == pytest.approx((2 / 3 + 0 + 1 + 0 + 0) / 5)
    # per race group (by the true race): White faces 0 and 1, Asian faces 2 and 3
    assert set(m["by_race"]) == {"White", "Asian"}
    assert m["by_race"]["White"]["age"]["mae"] == pytest.approx(1.0)
    assert m["by_race"]["Asian"]["race"]["accuracy"] == 1.0
    h = headline(m)
    assert h["age_cs5"] == 0.75 and h["race_accuracy"] == 0.75
    # best.safetensors is chosen by: MAE / 10 + (1 - accuracy) per classification task
    assert selection_score(m) == pytest.approx(a["mae"] / 10 + (1 - 2 / 3) + (1 - 0.75))


def test_grouped_ages_and_a_task_without_labels():
    groups = ("0-2", "3-9", "10-19", "20-29")
    from faceattr.tasks.task import ordinal_task

    age = ordinal_task("age", groups, values=(1.0, 6.0, 14.5, 24.5))
    other = nominal_task("glasses", ("no", "yes"))
    labels = {"age": np.array([0, 1, 3]), "glasses": np.array([MISSING, MISSING, MISSING])}
    preds = {
        "age": {"value": np.array([1.5, 14.0, 24.5]), "index": np.array([0, 2, 3])},
        "glasses": {"index": np.array([1, 1, 0])},
    }
    m = compute_metrics([age, other], preds, labels, breakdown=())
    a = m["overall"]["age"]
    assert (
        a["group_exact"] == pytest.approx(2 / 3) and a["group_1off"] == 1.0 and a["mae_levels"] == pytest.approx(1 / 3)
    )
    assert m["overall"]["glasses"] == {"n": 0}  # no labels: no figures, and no error
    assert selection_score(m) == pytest.approx(1 - 2 / 3)
