"""Experiment configs: typed, validated when loaded, saved and read back unchanged."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO
from faceattr.config import ConfigError, ExtraData, load_config, save_config
from faceattr.tasks.task import Task


def test_extra_datasets_and_declared_tasks_are_typed_and_round_trip(tmp_path):
    cfg = load_config(REPO / "configs/utkface-fairface-official.yaml")
    (extra,) = cfg.data.extra or ()
    assert (
        isinstance(extra, ExtraData)
        and extra.dataset == "fairface"
        and extra.label_map["race"]["East Asian"] == "Asian"
    )
    path = tmp_path / "c.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg
    manifest = {
        "name": "m",
        "data": {
            "dataset": "manifest",
            "labels": "x.csv",
            "tasks": [
                {
                    "name": "age",
                    "kind": "ordinal",
                    "levels": list(range(0, 18)),
                    "groups": [{"label": "kid", "from": 0}, {"label": "teen", "from": 13}],
                },
                {"name": "glasses", "kind": "nominal", "classes": ["no", "yes"]},
            ],
        },
    }
    src = tmp_path / "m.yaml"
    src.write_text(yaml.safe_dump(manifest))
    m = load_config(src)
    assert all(isinstance(t, Task) for t in m.data.tasks or ()) and m.data.tasks[0].group_labels == ("kid", "teen")
    save_config(m, tmp_path / "m2.yaml")
    assert load_config(tmp_path / "m2.yaml") == m


@pytest.mark.parametrize(
    "data,match",
    [
        ({"extra": [{"data": "no-colon"}]}, "DATASET:PATH"),
        ({"extra": [{"data": "fairface:x", "label_map": {"race": "Asian"}}]}, "label_map"),
        ({"extra": [{"data": "fairface:x", "labelmap": {}}]}, "did you mean label_map"),
        ({"extra": {"data": "fairface:x"}}, "list of datasets"),
        ({"tasks": [{"name": "x", "kind": "interval"}]}, "kind must be"),
        ({"tasks": [{"name": "x", "kind": "ordinal"}]}, "missing 'levels'"),
    ],
)
def test_bad_extra_datasets_and_tasks_are_refused_when_the_config_is_read(tmp_path, data, match):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"name": "c", "data": data}))
    with pytest.raises(ConfigError, match=match):
        load_config(p)
