"""Claims: the paired bootstrap, the verdict rule, and a report written from kept runs (made here)."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from faceattr.evidence.claims_report import write_claims
from faceattr.evidence.stats import Metric, paired_bootstrap, per_face, verdict
from faceattr.tasks.task import utkface_tasks


def test_paired_bootstrap_known_answer():
    rng = np.random.default_rng(1)
    b = rng.integers(0, 2, 4000).astype(float)
    a = b.copy()
    a[:400] = 1.0  # A is right wherever B is, and on some more faces
    diff, lo, hi = paired_bootstrap(a, b, higher_better=True)
    assert diff == pytest.approx((a - b).mean())
    assert 0 < lo < diff < hi
    # errors (lower is better): the sign follows "A is better"
    d2, lo2, hi2 = paired_bootstrap(np.full(50, 3.0), np.full(50, 4.0), higher_better=False)
    assert d2 == pytest.approx(1.0) and lo2 == pytest.approx(1.0) and hi2 == pytest.approx(1.0)
    # identical arms: the interval holds 0
    d3, lo3, hi3 = paired_bootstrap(b, b, True)
    assert d3 == lo3 == hi3 == 0.0
    with pytest.raises(ValueError):
        paired_bootstrap(a, b[:10], True)


def test_verdict_rule():
    assert verdict(0.02, 0.01, 0.03, None) == "confirmed"
    assert verdict(-0.02, -0.03, -0.01, None) == "refuted"
    assert verdict(0.01, -0.01, 0.03, None) == "no difference within noise"
    assert verdict(0.02, 0.01, 0.03, 0.05) == "no difference within noise"  # inside the seed noise
    assert verdict(0.02, 0.01, 0.03, 0.01) == "confirmed"


def test_per_face_metrics():
    age = utkface_tasks()[0]
    rows = pd.DataFrame({"age_true": [0, 29, 59], "age_value": [1.5, 33.0, 60.0], "age_index": [0, 32, 59]})
    np.testing.assert_allclose(per_face(rows, Metric("age_mae", "age", False, ""), age), [0.5, 3.0, 0.0])
    # ages 30 -> "30-39", 33 -> "30-39"; 1 -> "0-2", 1.5 -> "0-2"; 60 -> "60-69" both
    np.testing.assert_allclose(per_face(rows, Metric("age_group_exact", "age", True, ""), age), [1, 1, 1])


def _kept(root, exp, seed, metrics, rows, device="test"):
    d = root / "runs" / exp / f"seed-{seed}"
    d.mkdir(parents=True)
    (d / "result.json").write_text(
        json.dumps(
            {
                "experiment": exp,
                "seed": seed,
                "metrics": metrics,
                "tasks": ["gender"],
                "gflops": 1.0,
                "parameters": 10,
                "train_seconds": 5.0,
                "device_name": device,
            }
        )
    )
    pd.DataFrame(rows).to_csv(d / "predictions.csv.gz", index=False)
    (d / "log.csv").write_text("epoch,val_gender_accuracy\n1,0.5\n2,0.6\n")


def _grid(tmp_path, res, seeds, experiments):
    """A grid config over the UTKFace recipe whose kept runs live in ``res``."""
    from conftest import REPO

    cfg = tmp_path / "grid.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "name": "g",
                "base": str(REPO / "configs" / "utkface.yaml"),
                "out_dir": str(tmp_path / "o"),
                "results_dir": str(res),
                "seeds": seeds,
                "experiments": experiments,
            },
            sort_keys=False,
        )
    )
    return cfg


def test_report_from_kept_runs(tmp_path):
    res = tmp_path / "res"
    truth = np.arange(600) % 2
    good = truth.copy()
    bad = truth.copy()
    bad[:150] = 1 - bad[:150]  # 75 % right
    for s in (0, 1, 2):
        g = good.copy()
        g[s * 10 : (s + 1) * 10] = 1 - g[s * 10 : (s + 1) * 10]  # about 98 %, a little seed noise
        _kept(
            res,
            "mtl",
            s,
            {"gender_accuracy": float((g == truth).mean())},
            {"gender_true": truth, "gender_index": g, "gender_p": 0.9},
        )
        _kept(
            res,
            "single-gender",
            s,
            {"gender_accuracy": 0.75 + 0.001 * s},
            {"gender_true": truth, "gender_index": bad, "gender_p": 0.9},
        )
    cfg = _grid(tmp_path, res, [0, 1, 2], {"mtl": {}, "single-gender": {"train.tasks": ["gender"]}})
    rep = write_claims([cfg], tmp_path / "claims.md", n_boot=300, timing=False)
    rows = rep["grids"]["g"]["comparisons"]
    assert len(rows) == 1 and rows[0]["verdict"] == "confirmed" and not rows[0]["provisional"]
    assert rows[0]["a_mean"] == pytest.approx(100 * (1 - 10 / 600))
    md = (tmp_path / "claims.md").read_text()
    assert "**confirmed**" in md and "Table II" in md and "90.9" in md
    assert (tmp_path / "g-curves.png").stat().st_size > 1000
    assert rows[0]["mixed_device_seeds"] == [] and "devices differ" not in md


def test_a_pair_of_runs_from_two_devices_is_marked(tmp_path):
    res = tmp_path / "res"
    truth = np.arange(200) % 2
    rows = {"gender_true": truth, "gender_index": truth, "gender_p": 0.9}
    for s, dev in ((0, "NVIDIA H200"), (1, "cpu")):
        _kept(res, "mtl", s, {"gender_accuracy": 1.0}, rows, device=dev)
    _kept(res, "single-gender", 0, {"gender_accuracy": 1.0}, rows, device="cpu")  # one seed, on the CPU
    cfg = _grid(tmp_path, res, [0, 1], {"mtl": {}, "single-gender": {"train.tasks": ["gender"]}})
    rep = write_claims([cfg], tmp_path / "claims.md", n_boot=50, timing=False)
    (row,) = rep["grids"]["g"]["comparisons"]
    assert row["seeds"] == [0] and row["mixed_device_seeds"] == [0]  # seed 0: H200 against the CPU
    md = (tmp_path / "claims.md").read_text()
    assert "(devices differ: seed 0)" in md and "pairs runs of two devices" in md


def test_training_time_compares_seeds_trained_on_the_same_device():
    from types import SimpleNamespace

    from faceattr.evidence.claims import cost

    def run(secs: float, dev: str) -> dict:
        return {"gflops": 1.0, "parameters": 10.0, "train_seconds": secs, "device_name": dev}

    by = {
        "mtl": {0: run(100, "gpu"), 1: run(5000, "cpu")},  # seed 1 only on the CPU, and only for the MTL network
        "single-age": {0: run(60, "gpu")},
        "single-gender": {0: run(70, "gpu")},
        "single-race": {0: run(70, "gpu")},
    }
    c = cost(SimpleNamespace(by=by))  # type: ignore[arg-type]
    assert c is not None and c["train_seconds"] == {
        "mtl": 100.0,
        "stl_sum": 200.0,
        "ratio": 0.5,
        "seeds": [0],
        "device": "gpu",
    }
    # seeds with all four on the shared CPU as well: the accelerator's seed alone is compared
    for e, secs in (("mtl", 7000), ("single-age", 1500), ("single-gender", 1200), ("single-race", 1000)):
        by[e][1] = run(secs, "cpu")
    c = cost(SimpleNamespace(by=by))  # type: ignore[arg-type]
    assert c is not None and c["train_seconds"]["seeds"] == [0] and c["train_seconds"]["ratio"] == 0.5
    for e in by:
        by[e].pop(0)
    c = cost(SimpleNamespace(by=by))  # type: ignore[arg-type]  # CPU only: compared, and the report says where
    assert c is not None and c["train_seconds"]["device"] == "cpu" and c["train_seconds"]["ratio"] == 7000 / 3700
    by["mtl"][0] = run(100, "gpu")
    for e in ("single-age", "single-gender", "single-race"):
        by[e][0] = run(60, "gpu")
    for e in by:
        by[e].pop(1)
    assert c["gflops"]["ratio"] == pytest.approx(1 / 3)
    by["mtl"][0] = run(100, "cpu")  # no seed with all four on one device: no time ratio at all
    assert "train_seconds" not in cost(SimpleNamespace(by=by))  # type: ignore[arg-type, operator]


def test_device_effect_per_arm():
    from types import SimpleNamespace

    from faceattr.evidence.claims import device_effect

    def run(race: float, dev: str) -> dict:
        return {"metrics": {"race_accuracy": race}, "device_name": dev}

    tasks = {t.name: t for t in utkface_tasks()}
    by = {
        "mtl": {0: run(0.60, "gpu"), 1: run(0.62, "cpu"), 2: run(0.64, "cpu")},  # gpu - cpu = -3 points
        "single-race": {0: run(0.62, "gpu"), 1: run(0.63, "cpu")},  # -1 point
        "share-k3": {0: run(0.50, "gpu")},  # one device only: not counted
    }
    d = device_effect(SimpleNamespace(by=by, tasks=tasks))  # type: ignore[arg-type]
    assert set(d) == {"race_accuracy"}
    assert d["race_accuracy"]["arms"] == 2
    assert d["race_accuracy"]["mean"] == pytest.approx(-2.0)
    assert (d["race_accuracy"]["min"], d["race_accuracy"]["max"]) == (pytest.approx(-3.0), pytest.approx(-1.0))
    by["mtl"] = {1: run(0.62, "cpu")}
    by["single-race"] = {1: run(0.63, "cpu")}
    assert device_effect(SimpleNamespace(by=by, tasks=tasks)) == {}  # type: ignore[arg-type]


def test_claims_output_that_is_an_input_is_refused(tmp_path, capsys):
    from faceattr.cli.main import main

    cfg = tmp_path / "grid.yaml"
    cfg.write_text("name: g\n")
    assert main(["claims", "-c", str(cfg), "--out", str(cfg)]) == 2
    assert "is also an input" in capsys.readouterr().err
    assert cfg.read_text() == "name: g\n"
    assert main(["claims", "-c", str(cfg), "--out", str(tmp_path / "claims.json")]) == 2  # .md and .json collide
    assert "written twice" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.yaml"]


def test_the_shipped_head_is_judged_against_or_cnn_on_age_only(tmp_path):
    res = tmp_path / "res"
    rng = np.random.default_rng(0)
    age = rng.integers(1, 80, 400)
    # age_true / age_index are level indices (level 0 is age 1); age_value is in years
    exact = {"age_true": age, "age_value": age + 1.0, "age_index": age}
    off = {"age_true": age, "age_value": age + 4.0, "age_index": age + 3}  # 3 years off on every face
    _kept(res, "age-corn", 1, {"age_mae": 0.0}, exact)
    _kept(res, "age-binary", 1, {"age_mae": 3.0}, off)
    cfg = _grid(
        tmp_path,
        res,
        [1],
        {
            "age-corn": {"model.ordinal_formulation": "corn"},
            "age-binary": {"model.ordinal_formulation": "binary"},
        },
    )
    rep = write_claims([cfg], tmp_path / "claims.md", n_boot=50, timing=False)
    rows = rep["grids"]["g"]["comparisons"]
    assert {r["claim"] for r in rows} == {"shipped_head"}
    assert {r["metric"] for r in rows} == {"age_mae", "age_group_exact"}  # age only, no gender or race rows
    mae = next(r for r in rows if r["metric"] == "age_mae")
    assert (mae["a"], mae["b"]) == ("age-corn", "age-binary")
    assert mae["diff"] == pytest.approx(3.0) and mae["verdict"] == "confirmed" and mae["provisional"]
