"""Bring the larger FairFace set (official train 1-40,000 and val 1-5,000, margin 0.25) into the layout FairFace is
distributed in, for the ``fairface:`` reader and its official protocol (train on official train, report on official
val; see ``faceattr.data.splits.fairface_official_protocol``).

    git clone --depth 1 https://github.com/sumanvithaeadala/EthnicityDetection /tmp/ed
    python scripts/get_fairface.py /tmp/ed --out data/fairface-official

SOURCE may be a clone of that public repository (``fair_face/train``, ``fair_face/val``,
``fairface_label_{train,val}.csv``), its bare git directory (read with ``git archive``), or FairFace's own download
(``train/``, ``val/`` and the two CSVs). The output folder gets ``train/``, ``val/``, the two label CSVs with the
spreadsheet-mangled age groups repaired (``03-Sep`` -> ``3-9``, ``Oct-19`` -> ``10-19``) and ``SOURCE.md`` (origin,
licence: FairFace is CC BY 4.0, Kärkkäinen & Joo, WACV 2021). Nothing is downloaded by faceattr itself; the output
folder is git-ignored and must never be committed. Any existing output is refused, not overwritten.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

AGE_FIX = {"03-Sep": "3-9", "Sep-03": "3-9", "3-Sep": "3-9", "Oct-19": "10-19", "19-Oct": "10-19"}
CSVS = ("fairface_label_train.csv", "fairface_label_val.csv")


def _layout(src: Path) -> Path | None:
    """The folder holding train/, val/ (directly or under fair_face/) and the CSVs, or None."""
    for images in (src, src / "fair_face"):
        if (images / "train").is_dir() and (images / "val").is_dir() and all((src / c).is_file() for c in CSVS):
            return images
    return None


def _from_git_dir(git_dir: Path, tmp: Path) -> Path:
    out = tmp / "tree"
    out.mkdir()
    proc = subprocess.run(
        ["git", f"--git-dir={git_dir}", "archive", "--format=tar", "HEAD", "fair_face", *CSVS],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"get_fairface: git archive failed in {git_dir}: {proc.stderr.decode(errors='replace')}")
    with tarfile.open(fileobj=__import__("io").BytesIO(proc.stdout)) as tf:
        tf.extractall(out, filter="data")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="clone, bare git directory, or FairFace download folder")
    ap.add_argument("--out", default="data/fairface-official")
    a = ap.parse_args(argv)
    src, out = Path(a.source), Path(a.out)
    if out.exists() and any(out.iterdir()):
        print(f"get_fairface: error: {out} exists and is not empty; choose another --out", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        root = src
        if _layout(src) is None and (src / "objects").is_dir() and (src / "HEAD").is_file():
            root = _from_git_dir(src, tmp)
        images = _layout(root)
        if images is None:
            print(
                f"get_fairface: error: {src} holds neither train/ and val/ (or fair_face/train, fair_face/val) "
                f"with {CSVS}, nor a git directory of them",
                file=sys.stderr,
            )
            return 2
        part = out.with_name(out.name + ".partial")
        if part.exists():
            shutil.rmtree(part)
        part.mkdir(parents=True)
        counts = {}
        for split in ("train", "val"):
            shutil.copytree(images / split, part / split)
            counts[split] = sum(1 for _ in (part / split).iterdir())
        fixed = 0
        for c in CSVS:
            with open(root / c, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            for r in rows:
                if r.get("age") in AGE_FIX:
                    r["age"] = AGE_FIX[r["age"]]
                    fixed += 1
            with open(part / c, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
                w.writeheader()
                w.writerows(rows)
        (part / "SOURCE.md").write_text(
            f"# FairFace (official train {counts['train']} / val {counts['val']} images)\n\n"
            f'From: {src}\n\nFairFace: Kärkkäinen & Joo, "FairFace: Face Attribute Dataset for Balanced Race, Gender, '
            'and Age", WACV 2021; licence CC BY 4.0. Copied by scripts/get_fairface.py; '
            f"{fixed} spreadsheet-mangled age labels repaired. Do not commit this folder.\n",
            encoding="utf-8",
        )
        if out.exists():
            out.rmdir()
        part.rename(out)
    print(f"{out}: train {counts['train']}, val {counts['val']} images; {fixed} age labels repaired")
    return 0


if __name__ == "__main__":
    sys.exit(main())
