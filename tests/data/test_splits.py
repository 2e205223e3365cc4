import pandas as pd
import pytest

from faceattr.data.splits import fairface_protocol, split_of, utkface_protocol


def test_split_rule():
    assert split_of("00000000" + "f" * 56) == "train"  # 0 % 10 = 0
    assert split_of(format(8, "08x") + "0" * 56) == "val"
    assert split_of(format(19, "08x") + "0" * 56) == "test"


@pytest.mark.slow
def test_utkface_protocol_reproduces_split_file(utk_dir):
    ours = utkface_protocol(utk_dir).astype(str).reset_index(drop=True)
    ref = pd.read_csv(utk_dir / "split.csv", dtype=str, keep_default_na=False)
    assert list(ours.columns) == list(ref.columns)
    assert len(ours) == len(ref) == 23056
    pd.testing.assert_frame_equal(ours, ref)
    assert ours["split"].value_counts().to_dict() == {"train": 18457, "val": 2308, "test": 2291}


@pytest.mark.slow
def test_fairface_protocol_reproduces_split_file(fairface_dir):
    wide = fairface_dir.parent / "fairface-wide" / "labels.csv"
    ours = fairface_protocol(fairface_dir, wide).astype(str).reset_index(drop=True)
    ref = pd.read_csv(fairface_dir / "split.csv", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(ours, ref)
    assert ours["split"].value_counts().to_dict() == {"train": 12297, "test": 2123, "val": 1567}
    sources = set(pd.read_csv(wide)["source"])
    assert set(ours.loc[ours["file"].isin(sources), "split"]) == {"test"}


def test_paplham_splits_rotate_ten_folders(tmp_path):
    from conftest import make_utkface
    from faceattr.data.splits import PAPLHAM_SPLITS, paplham_protocol

    root = make_utkface(tmp_path / "utk", n=50, faces="drawn", size=32)
    tables = {k: paplham_protocol(root, k) for k in PAPLHAM_SPLITS}
    for k, df in tables.items():
        counts = df["split"].value_counts().to_dict()
        assert counts == {"train": 30, "val": 10, "test": 10}, (k, counts)
    # split 0 tests on folders 8 and 9: the 9th and 10th of every ten names in sorted order
    df = tables[0]
    assert list(df.index[df["split"] == "test"] % 10) == [8, 9] * 5
    assert df["file"].is_monotonic_increasing and set(tables[3]["split"]) == {"train", "val", "test"}
    with pytest.raises(Exception, match="0-4"):
        paplham_protocol(root, 5)
