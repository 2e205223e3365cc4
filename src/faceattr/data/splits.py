"""The fixed evaluation protocols (UTKFace protocol v1 and the FairFace protocol), computed from raw folders.

Rule (shared/README.md): drop names that do not parse; group byte-identical files; drop a group whole when its
labels conflict; keep one file (the first in source order: by name for a folder, by row for a CSV) of each
consistent group; assign the split by content hash, ``int(sha256(bytes)[:8], 16) % 10`` -> 0-7 train, 8 val, 9 test.
For FairFace the images whose wide-margin versions exist (``fairface-wide/labels.csv``'s ``source`` column) are
always test."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from faceattr.data.readers import DataError, parse_utkface_name, utkface_image_dir

SPLIT_COLUMNS = ("file", "age", "gender", "race", "split", "sha256")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def split_of(sha: str) -> str:
    r = int(sha[:8], 16) % 10
    return "train" if r < 8 else ("val" if r == 8 else "test")


def _hash_all(paths: Sequence[Path]) -> list[str]:
    with ThreadPoolExecutor(max_workers=4) as ex:
        return list(ex.map(sha256_file, paths))


def _apply_rule(rows: list[dict], forced_test: Iterable[str] = ()) -> pd.DataFrame:
    """rows: dicts with file, age, gender, race, sha256, in source order. Returns the protocol table."""
    forced = set(forced_test)
    df = pd.DataFrame(rows, columns=["file", "age", "gender", "race", "sha256"])
    n_labels = df.groupby("sha256")[["age", "gender", "race"]].transform("nunique").max(axis=1)
    df = df[n_labels <= 1]
    df = df.drop_duplicates("sha256", keep="first").reset_index(drop=True)
    df["split"] = [("test" if f in forced else split_of(s)) for f, s in zip(df["file"], df["sha256"])]
    return df[list(SPLIT_COLUMNS)]


def utkface_protocol(root: str | Path) -> pd.DataFrame:
    """UTKFace protocol v1 from a raw UTKFace folder."""
    img_dir = utkface_image_dir(Path(root))
    if not img_dir.is_dir():
        raise DataError(f"UTKFace folder not found: {img_dir}")
    files = sorted(p for p in img_dir.iterdir() if p.is_file())
    parsed: list[tuple[Path, tuple[int, int, int]]] = []
    for p in files:
        lab = parse_utkface_name(p.name)
        if lab is not None:
            parsed.append((p, lab))
    shas = _hash_all([p for p, _ in parsed])
    rows = [{"file": p.name, "age": a, "gender": g, "race": r, "sha256": s} for (p, (a, g, r)), s in zip(parsed, shas)]
    return _apply_rule(rows)


# The five splits of Paplham et al., "A Call to Reflect on Evaluation Practices for Age Estimation" (arXiv
# 2307.04570; the databases repository of their benchmark): ten folders, rotated into train / val / test.
PAPLHAM_SPLITS: dict[int, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {
    0: ((0, 1, 2, 3, 4, 5), (6, 7), (8, 9)),
    1: ((2, 3, 4, 5, 6, 7), (8, 9), (0, 1)),
    2: ((4, 5, 6, 7, 8, 9), (0, 1), (2, 3)),
    3: ((5, 6, 7, 8, 9, 0), (1, 2), (3, 4)),
    4: ((6, 7, 8, 9, 0, 1), (2, 3), (4, 5)),
}


def paplham_protocol(root: str | Path, split: int) -> pd.DataFrame:
    """UTKFace in Paplham et al.'s benchmark protocol, split ``split`` (0-4).

    Their database assigns UTKFace's images to ten folders in turn (image i to folder i mod 10) in the order their
    script listed the raw ``part1-3`` folders, and each split trains on six folders, chooses on two and tests on two
    (:data:`PAPLHAM_SPLITS`). Their database file is not published in the repository's text (it is stored as a
    large file outside it), and the listing order is the file system's, which is not recorded; so the folders are
    reproduced by the same rule over UTKFace's names in sorted order: the same sizes, the same rotation and the same
    share of each folder in each part, not the same faces. Every parsed image is kept (their benchmark does not
    drop UTKFace's byte-identical duplicates), and ``sha256`` is recorded as in the other protocols."""
    if split not in PAPLHAM_SPLITS:
        raise DataError(f"Paplham et al. define splits 0-4, got {split}")
    img_dir = utkface_image_dir(Path(root))
    if not img_dir.is_dir():
        raise DataError(f"UTKFace folder not found: {img_dir}")
    files = sorted(p for p in img_dir.iterdir() if p.is_file())
    parsed = [(p, lab) for p in files if (lab := parse_utkface_name(p.name)) is not None]
    shas = _hash_all([p for p, _ in parsed])
    trn, val, tst = PAPLHAM_SPLITS[split]
    part = {**{f: "train" for f in trn}, **{f: "val" for f in val}, **{f: "test" for f in tst}}
    rows = [
        {"file": p.name, "age": a, "gender": g, "race": r, "split": part[i % 10], "sha256": s}
        for i, ((p, (a, g, r)), s) in enumerate(zip(parsed, shas))
    ]
    return pd.DataFrame(rows, columns=list(SPLIT_COLUMNS))


def fairface_protocol(root: str | Path, wide_labels: str | Path | None = None) -> pd.DataFrame:
    """FairFace protocol from ``labels.csv`` + images; the wide set's sources are forced into test."""
    root = Path(root)
    labels = root / "labels.csv"
    if not labels.is_file():
        raise DataError(f"FairFace labels file not found: {labels}")
    with open(labels, newline="", encoding="utf-8") as f:
        recs = [r for r in csv.DictReader(f) if r.get("file")]
    shas = _hash_all([root / r["file"] for r in recs])
    rows = [
        {"file": r["file"], "age": r["age"], "gender": r["gender"], "race": r["race"], "sha256": s}
        for r, s in zip(recs, shas)
    ]
    forced: set[str] = set()
    if wide_labels is not None and Path(wide_labels).is_file():
        with open(wide_labels, newline="", encoding="utf-8") as f:
            forced = {r["source"] for r in csv.DictReader(f) if r.get("source")}
    return _apply_rule(rows, forced)


def fairface_official_protocol(root: str | Path, wide_labels: str | Path | None = None) -> pd.DataFrame:
    """The FairFace protocol that compares with the literature: **train on official train, report on official
    val**. Official val is ``test`` (reporting only, never for choosing a model); a held-out tenth of official
    train (content hash: ``int(sha256[:8], 16) % 10 == 9``) is ``val``, for choosing epochs; the rest is ``train``.
    The tight sources of the wide set (``wide_labels``' ``source`` column, ``images/N.jpg`` = official
    ``train/N.jpg``) are ``excluded``: never trained on. Byte-identical files with conflicting labels are dropped,
    one file of each consistent group is kept (as for the other protocols)."""
    from faceattr.data.readers import FAIRFACE_AGE_ALIASES, FAIRFACE_OFFICIAL_CSVS

    root = Path(root)
    rows: list[dict] = []
    for csv_name, official in zip(FAIRFACE_OFFICIAL_CSVS, ("train", "val")):
        path = root / csv_name
        if not path.is_file():
            raise DataError(f"FairFace official labels not found: {path}")
        with open(path, newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                if r.get("file"):
                    rows.append(
                        {
                            "file": r["file"],
                            "age": FAIRFACE_AGE_ALIASES.get(r["age"], r["age"]),
                            "gender": r["gender"],
                            "race": r["race"],
                            "official": official,
                        }
                    )
    shas = _hash_all([root / r["file"] for r in rows])
    excluded: set[str] = set()
    if wide_labels is not None and Path(wide_labels).is_file():
        with open(wide_labels, newline="", encoding="utf-8") as f:
            excluded = {"train/" + Path(r["source"]).name for r in csv.DictReader(f) if r.get("source")}
    df = pd.DataFrame(rows)
    df["sha256"] = shas
    n_labels = df.groupby("sha256")[["age", "gender", "race"]].transform("nunique").max(axis=1)
    df = df[n_labels <= 1].drop_duplicates("sha256", keep="first").reset_index(drop=True)

    def split(r: pd.Series) -> str:
        if r["official"] == "val":
            return "test"
        if r["file"] in excluded:
            return "excluded"
        return "val" if int(r["sha256"][:8], 16) % 10 == 9 else "train"

    df["split"] = df.apply(split, axis=1)
    return df[list(SPLIT_COLUMNS)]


def write_split(df: pd.DataFrame, path: str | Path) -> None:
    from faceattr.safeio import atomic_output

    with atomic_output(path) as f:
        df.to_csv(f, index=False, lineterminator="\n")


def read_split(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file not found: {path}")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"file", "split"} - set(df.columns)
    if missing:
        raise DataError(f"{path}: not a split file (missing columns {sorted(missing)})")
    bad = ~df["split"].isin(["train", "val", "test", "excluded"])  # excluded: never used (wide-set sources)
    if bad.any():
        raise DataError(f"{path}: unknown split values {sorted(set(df.loc[bad, 'split']))[:5]}")
    return df
