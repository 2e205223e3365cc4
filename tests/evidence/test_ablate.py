import json

import pytest
import yaml

from conftest import REPO, UTK
from faceattr.evidence.ablate import load_ablation, run_grid
from faceattr.evidence.ablate_report import write_report


def _grid(tmp_path, root=UTK):
    d = {
        "name": "tiny-grid",
        "base": str(REPO / "configs" / "utkface.yaml"),
        "out_dir": str(tmp_path / "runs"),
        "results_dir": str(tmp_path / "results"),
        "seeds": [0, 1],
        "eval_split": "test",
        "eval_limit": 40,
        "reference": "mtl",
        "budget": {
            "data.root": str(root),
            "data.image_size": 64,
            "data.max_train": 32,
            "data.max_val": 16,
            "train.epochs": 1,
            "train.batch_size": 16,
            "train.max_steps_per_epoch": 1,
            "train.threads": 1,
        },
        "experiments": {"mtl": {}, "single-gender": {"train.tasks": ["gender"]}},
        "groups": {"tasks": ["mtl", "single-gender"]},
    }
    p = tmp_path / "grid.yaml"
    p.write_text(yaml.safe_dump(d))
    return load_ablation(p)


@pytest.mark.slow
def test_grid_runs_resumes_and_reports(tmp_path, train_dir):
    ab = _grid(tmp_path, train_dir)
    results = run_grid(ab)
    assert len(results) == 4
    done = sorted((tmp_path / "runs").glob("*/seed-*/result.json"))
    assert len(done) == 4
    stamps = {p: p.stat().st_mtime_ns for p in done}
    single = json.loads((tmp_path / "runs" / "single-gender" / "seed-0" / "result.json").read_text())
    assert single["tasks"] == ["gender"] and "gender_accuracy" in single["metrics"]
    assert "age_mae" not in single["metrics"] and 0 < single["n_eval"] <= 40
    mtl = json.loads((tmp_path / "runs" / "mtl" / "seed-1" / "result.json").read_text())
    assert mtl["parameters"] > single["parameters"] and mtl["gflops"] > single["gflops"] > 0
    # a restart redoes nothing that finished, and a removed result is redone (resuming that run)
    (tmp_path / "runs" / "mtl" / "seed-1" / "result.json").unlink()
    results2 = run_grid(ab)
    assert len(results2) == 4
    for p, t in stamps.items():
        if "mtl/seed-1" not in str(p):
            assert p.stat().st_mtime_ns == t, p
    paths = write_report(ab, results2)
    md = paths["markdown"].read_text()
    assert "| mtl |" in md and "± " in md and "single-task" in md
    assert paths["csv"].read_text().splitlines()[0].startswith("experiment,seeds,age_mae_mean")
    assert paths["plot"].stat().st_size > 1000
    # every finished run is kept (result, curve, per-face predictions) under results_dir/runs: a new machine
    # with an empty out_dir recomputes nothing
    kept = tmp_path / "results" / "runs" / "mtl" / "seed-0"
    assert {p.name for p in kept.iterdir()} == {"result.json", "log.csv", "predictions.csv.gz"}
    import pandas as pd

    rows = pd.read_csv(kept / "predictions.csv.gz")
    assert len(rows) == single["n_eval"] and {
        "age_true",
        "age_value",
        "gender_true",
        "gender_index",
        "gender_p",
    } <= set(rows.columns)
    # running one seed (--seeds 1) reports every finished seed of the grid, not only the one just run
    from faceattr.cli.main import main

    (tmp_path / "results" / "ablation.md").unlink()
    assert main(["ablate", "-c", str(tmp_path / "grid.yaml"), "--seeds", "1", "--report-only"]) == 0
    assert "| mtl | 2 |" in (tmp_path / "results" / "ablation.md").read_text()
    import shutil

    shutil.rmtree(tmp_path / "runs")
    assert len(run_grid(ab)) == 4
    assert not (tmp_path / "runs").exists()
    # a grid whose runs are recorded only in the committed report's runs.json (no runs/ folder, no out_dir): a
    # report rewritten on a new machine keeps every row, and nothing is run again
    shutil.rmtree(tmp_path / "results" / "runs")
    assert main(["ablate", "-c", str(tmp_path / "grid.yaml"), "--report-only"]) == 0
    assert len(json.loads((tmp_path / "results" / "runs.json").read_text())) == 4
    assert "| mtl | 2 |" in (tmp_path / "results" / "ablation.md").read_text()
    assert len(run_grid(ab)) == 4
    assert not (tmp_path / "runs").exists()


def test_jobs_order_and_seeds_for(tmp_path):
    p = tmp_path / "g.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "name": "g",
                "base": "x.yaml",
                "out_dir": "o",
                "results_dir": "r",
                "seeds": [0, 1],
                "experiments": {"mtl": {}, "single-age": {}, "age-corn": {}},
                "seeds_for": {"age-corn": [0]},
            },
            sort_keys=False,
        )
    )
    ab = load_ablation(p)
    # every seed of the full arms first (their answers complete first), then the one-seed arms
    assert ab.jobs() == [("mtl", 0), ("single-age", 0), ("mtl", 1), ("single-age", 1), ("age-corn", 0)]
    assert ab.jobs(["age-corn"]) == [("age-corn", 0)]
    p.write_text(
        yaml.safe_dump(
            {
                "name": "g",
                "base": "x.yaml",
                "out_dir": "o",
                "results_dir": "r",
                "experiments": {"mtl": {}},
                "seeds_for": {"nope": [0]},
            }
        )
    )
    import pytest

    from faceattr.config import ConfigError

    with pytest.raises(ConfigError, match="seeds_for"):
        load_ablation(p)
