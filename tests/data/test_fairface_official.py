"""The larger FairFace set: scripts/get_fairface.py (from a clone or a bare git directory), the reader of the official
layout with spreadsheet-mangled ages, and the official protocol (train / held-out val / official val as test /
excluded wide-set sources). All on a small fake copy made here."""

import csv
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from faceattr.data.readers import read_fairface
from faceattr.data.splits import fairface_official_protocol

sys.path.insert(0, str(REPO / "scripts"))
import get_fairface  # noqa: E402

AGES = ["03-Sep", "Oct-19", "20-29", "50-59", "more than 70"]


def _fake_repo(root):
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("val", 6)):
        d = root / "fair_face" / split
        d.mkdir(parents=True)
        rows = []
        for i in range(1, n + 1):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(d / f"{i}.jpg")
            rows.append(
                {
                    "file": f"{split}/{i}.jpg",
                    "age": AGES[i % 5],
                    "gender": "Male" if i % 2 else "Female",
                    "race": "White",
                    "service_test": "TRUE",
                }
            )
        with open(root / f"fairface_label_{split}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return root


def test_from_a_clone_and_from_a_git_dir(tmp_path):
    src = _fake_repo(tmp_path / "clone")
    assert get_fairface.main([str(src), "--out", str(tmp_path / "a")]) == 0
    out = tmp_path / "a"
    assert len(list((out / "train").iterdir())) == 30 and len(list((out / "val").iterdir())) == 6
    ages = {r["age"] for r in csv.DictReader(open(out / "fairface_label_train.csv"))}
    assert "3-9" in ages and "10-19" in ages and "03-Sep" not in ages
    assert "CC BY 4.0" in (out / "SOURCE.md").read_text()
    assert get_fairface.main([str(src), "--out", str(out)]) == 2  # never overwrites
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(git + ["init", "-q", str(src)], check=True)
    subprocess.run(git + ["-C", str(src), "add", "."], check=True)
    subprocess.run(git + ["-C", str(src), "commit", "-qm", "x"], check=True)
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(src), str(bare)], check=True)
    assert get_fairface.main([str(bare), "--out", str(tmp_path / "b")]) == 0
    assert len(list((tmp_path / "b" / "train").iterdir())) == 30


def test_reader_and_official_protocol(tmp_path):
    src = _fake_repo(tmp_path / "clone")
    root = src / "fair_face"
    for c in ("fairface_label_train.csv", "fairface_label_val.csv"):
        shutil.copy(src / c, root / c)  # the official layout, mangled ages still in the CSVs
    t = read_fairface(root)
    assert len(t) == 36 and set(t.frame["file"].str[:3]) == {"tra", "val"}
    assert "age labels '03-Sep' read as '3-9'" in t.report.summary()
    wide = tmp_path / "wide.csv"
    wide.write_text("file,age,gender,race,source\nimages/fairface_0001.jpg,3-9,Male,White,images/3.jpg\n")
    df = fairface_official_protocol(root, wide)
    split = dict(zip(df["file"], df["split"]))
    assert split["train/3.jpg"] == "excluded"
    assert {split[f"val/{i}.jpg"] for i in range(1, 7)} == {"test"}  # official val: reporting only
    assert {s for f, s in split.items() if f.startswith("train/")} <= {"train", "val", "excluded"}
    assert set(df["age"]) <= {"3-9", "10-19", "20-29", "50-59", "more than 70"}


def test_official_split_with_wide_set_loads_as_extra_dataset(tmp_path):
    """The excluded wide-set sources survive the split cache (a cached split with 'excluded' rows once failed to
    load) and are in no split; an extra dataset's own wide_labels reach its protocol; the cache key includes them."""
    from faceattr.config import DataConfig, ExtraData
    from faceattr.data.combine import extra_configs
    from faceattr.data.sources import load_split

    src = _fake_repo(tmp_path / "clone")
    root = src / "fair_face"
    for c in ("fairface_label_train.csv", "fairface_label_val.csv"):
        shutil.copy(src / c, root / c)
    wide = tmp_path / "wide.csv"
    wide.write_text("file,age,gender,race,source\nimages/fairface_0001.jpg,3-9,Male,White,images/3.jpg\n")
    primary = DataConfig(
        dataset="utkface",
        root=str(tmp_path / "utk"),
        cache_dir=str(tmp_path / "cache"),
        extra=(ExtraData(f"fairface:{root}", wide_labels=str(wide)),),
    )
    ((cfg, _),) = extra_configs(primary)
    assert cfg.wide_labels == str(wide)
    for _ in range(2):  # computed, then read back from the cache
        files = {s: set(load_split(cfg, s).frame["file"]) for s in ("train", "val", "test")}
        assert "train/3.jpg" not in files["train"] | files["val"] | files["test"]
        assert len(files["train"]) + len(files["val"]) == 29 and len(files["test"]) == 6
    # without the wide labels the same folder gets its own cached split, in which train/3.jpg is trained on
    plain = DataConfig(dataset="fairface", root=str(root), cache_dir=str(tmp_path / "cache"))
    assert "train/3.jpg" in set(load_split(plain, "train").frame["file"]) | set(load_split(plain, "val").frame["file"])
    assert len(list((tmp_path / "cache").glob("split-fairface-*.csv"))) == 2
