from pathlib import Path

import pytest

from conftest import DATA, need
from faceattr.data.readers import (
    ADIENCE_GROUPS,
    DataError,
    adience_age_group,
    parse_utkface_name,
    read_adience_folds,
    read_fairface,
    read_manifest,
    read_utkface,
    tasks_from_spec,
)
from faceattr.tasks.task import MISSING


def test_utkface_name_parsing():
    assert parse_utkface_name("26_0_1_20170116200900839.jpg.chip.jpg") == (26, 0, 1)
    assert parse_utkface_name("24_0_1_20170116220224657 .jpg.chip.jpg") == (24, 0, 1)  # stray space: labels intact
    assert parse_utkface_name("39_1_20170116174525125.jpg.chip.jpg") is None  # race missing
    assert parse_utkface_name("26_2_1_2017.jpg.chip.jpg") is None  # gender out of range
    assert parse_utkface_name("notes.txt") is None


def test_read_utkface_real(utk_dir):
    t = read_utkface(utk_dir)
    assert len(t) == 23705 and t.report.rows_read == 23708
    bad = set((utk_dir / "bad_names_missing_race.txt").read_text().split())
    assert set(t.report.skipped["file name does not parse as age_gender_race_datetime"]) == bad
    assert t.frame["age"].min() >= 0 and t.frame["race"].max() == 4


def test_read_utkface_own_folder(tmp_path):
    (tmp_path / "30_1_2_2017.jpg.chip.jpg").write_bytes(b"x")
    (tmp_path / "garbage.jpg").write_bytes(b"x")
    t = read_utkface(tmp_path)
    assert len(t) == 1 and t.frame.loc[0, "gender"] == 1 and t.report.n_skipped == 1
    with pytest.raises(DataError):
        read_utkface(tmp_path / "nope")


def test_read_fairface_real(fairface_dir):
    t = read_fairface(fairface_dir)
    assert len(t) == 16000 and t.report.n_skipped == 0
    assert set(t.frame["age"]) == set(range(9)) and set(t.frame["race"]) == set(range(7))
    assert Path(t.frame.loc[0, "path"]).is_file()


def test_adience_real_folds_with_defects():
    folder = need(DATA / "adience-folds")
    t = read_adience_folds(folder)
    # verify.txt: 13,923 rows in all; folds 2-4 end mid-row: in folds 2 and 3 after the labels (kept),
    # in fold 4 inside the image name (skipped)
    assert t.report.rows_read == 13923
    assert len(t) == 13922
    assert list(t.report.skipped) == ["truncated row (labels incomplete)"]
    assert t.report.skipped["truncated row (labels incomplete)"][0].startswith("fold_4_data.txt")
    assert t.report.notes["truncated rows kept (labels complete, face box cut)"] == 2
    assert (t.frame["gender"] == MISSING).sum() == 736 + 108  # 'u' and empty (the 109th empty one is the cut row)
    assert (t.frame["age"] == MISSING).sum() == 102  # "None" (the one empty age is the cut row)
    assert sorted(t.frame["fold"].unique()) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "raw,group",
    [
        ("(25, 32)", "(25, 32)"),
        ("35", "(38, 43)"),
        ("13", "(8, 12)"),
        ("(38, 42)", "(38, 43)"),
        ("(8, 23)", "(15, 20)"),
        ("57", "(60, 100)"),
        ("3", "(4, 6)"),
        ("2", "(0, 2)"),
    ],
)
def test_adience_age_mapping(raw, group):
    idx, _ = adience_age_group(raw)
    assert ADIENCE_GROUPS[idx] == group


def test_adience_unreadable_age_is_reported(tmp_path):
    header = "user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\tfiducial_yaw_angle\tfiducial_score"
    rows = [
        "u1\ta.jpg\t1\t(25, 32)\tf\t0\t0\t1\t1\t0\t0\t1",
        "u1\tb.jpg\t2\tforty\tm\t0\t0\t1\t1\t0\t0\t1",
        "u1\tc.jpg\t3\t(25, ",
    ]
    (tmp_path / "fold_0_data.txt").write_text("\n".join([header] + rows))
    t = read_adience_folds(tmp_path)
    assert len(t) == 1 and t.report.n_skipped == 2


SPEC = [
    {"name": "age", "kind": "ordinal", "levels": ["child", "adult", "senior"]},
    {"name": "smile", "kind": "nominal", "classes": ["no", "yes"]},
]


def test_manifest_missing_labels_and_bad_rows(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("file,age,smile\na.jpg,child,yes\nb.jpg,,no\nc.jpg,adult,\nd.jpg,toddler,no\n,adult,no\n")
    t = read_manifest(csv, tasks_from_spec(SPEC))
    assert list(t.frame["age"]) == [0, MISSING, 1]
    assert list(t.frame["smile"]) == [1, 0, MISSING]
    assert t.report.n_skipped == 2  # unknown level 'toddler', empty path


def test_manifest_absent_column_means_missing(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("file,age\na.jpg,senior\n")
    t = read_manifest(csv, tasks_from_spec(SPEC))
    assert list(t.frame["smile"]) == [MISSING] and list(t.frame["age"]) == [2]


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00binary", b"name;age\nx;1\n", b""])
def test_manifest_malformed_files(tmp_path, content):
    csv = tmp_path / "m.csv"
    csv.write_bytes(content)
    with pytest.raises(DataError):
        read_manifest(csv, tasks_from_spec(SPEC))


def test_task_spec_errors():
    with pytest.raises(DataError):
        tasks_from_spec([{"name": "x", "kind": "interval"}])
