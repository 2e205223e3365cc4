"""Dataset readers: a folder or label file in, a table of samples with per-task label indices out.

Every reader returns a :class:`SampleTable`: a pandas DataFrame with a ``path`` column (absolute image path),
one integer column per task (index into the task's levels/classes, ``MISSING`` = -1 when unknown) and any
extra columns of the source, plus a :class:`ReadReport` that counts and lists what was skipped and why.
Real data is messy; readers never crash on a bad row, they report it.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from faceattr.errors import FaceattrError
from faceattr.tasks.task import (
    MISSING,
    Task,
    fairface_tasks,
    nominal_task,
    ordinal_task,
    task_from_spec,
    utkface_tasks,
)

log = logging.getLogger(__name__)


class DataError(FaceattrError, ValueError):
    """A dataset or label file that cannot be read at all (as opposed to a bad row, which is skipped)."""


@dataclass
class ReadReport:
    source: str
    rows_read: int = 0
    kept: int = 0
    skipped: dict[str, list[str]] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, item: str) -> None:
        self.skipped.setdefault(reason, []).append(item)

    def note(self, what: str, n: int = 1) -> None:
        self.notes[what] = self.notes.get(what, 0) + n

    @property
    def n_skipped(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def summary(self) -> str:
        parts = [f"{self.source}: {self.kept} samples kept of {self.rows_read}"]
        for reason, items in self.skipped.items():
            parts.append(f"skipped {len(items)} ({reason}; e.g. {items[0]!r})")
        for what, n in self.notes.items():
            parts.append(f"{n} {what}")
        return "; ".join(parts)


@dataclass
class SampleTable:
    """Samples + the tasks their label columns refer to + the report of how they were read."""

    frame: pd.DataFrame
    tasks: tuple[Task, ...]
    report: ReadReport
    name: str = ""

    def __len__(self) -> int:
        return len(self.frame)

    def labels(self, task: str) -> "pd.Series[int]":
        return self.frame[task]

    def subset(self, mask: Any) -> "SampleTable":
        return SampleTable(self.frame[mask].reset_index(drop=True), self.tasks, self.report, self.name)


# ---- UTKFace --------------------------------------------------------------------------------------------------
UTK_NAME = re.compile(r"^(\d{1,3})_([01])_([0-4])_[^_]+$")


def parse_utkface_name(name: str) -> tuple[int, int, int] | None:
    """``[age]_[gender]_[race]_[datetime].jpg.chip.jpg`` -> (age, gender, race), or None if it does not parse.

    The datetime part is not checked: a few real names have a stray space or a missing dot there, and their
    labels are intact. Names with a field missing (``39_1_2017...``) or out of range do not parse."""
    m = UTK_NAME.match(name)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def utkface_image_dir(root: Path) -> Path:
    """Accept either the folder of images or its parent that holds ``UTKFace/``."""
    root = Path(root)
    return root / "UTKFace" if (root / "UTKFace").is_dir() else root


def read_utkface(root: str | Path, tasks: Sequence[Task] | None = None) -> SampleTable:
    """Read a UTKFace folder (labels in the file names). Names that do not parse are skipped and counted."""
    tasks = tuple(tasks or utkface_tasks())
    img_dir = utkface_image_dir(Path(root))
    if not img_dir.is_dir():
        raise DataError(f"UTKFace folder not found: {img_dir}")
    report = ReadReport(source=f"utkface:{img_dir}")
    task_by = {t.name: t for t in tasks}
    rows = []
    for p in sorted(img_dir.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        report.rows_read += 1
        parsed = parse_utkface_name(p.name)
        if parsed is None:
            report.skip("file name does not parse as age_gender_race_datetime", p.name)
            continue
        age, gender, race = parsed
        row: dict[str, Any] = {"path": str(p), "file": p.name, "age_years": age}
        try:
            if "age" in task_by:
                row["age"] = task_by["age"].index(min(max(age, task_by["age"].levels[0]), task_by["age"].levels[-1]))
            if "gender" in task_by:
                row["gender"] = gender
            if "race" in task_by:
                row["race"] = race
        except KeyError as e:
            report.skip(f"label out of range ({e})", p.name)
            continue
        rows.append(row)
    report.kept = len(rows)
    if not rows:
        raise DataError(f"no UTKFace images with parseable names in {img_dir}")
    log.info(report.summary())
    return SampleTable(_frame(rows, tasks), tasks, report, "utkface")


# ---- FairFace -------------------------------------------------------------------------------------------------
# Spreadsheet-mangled FairFace age groups (a CSV opened and saved in a spreadsheet turns "3-9" into a date)
FAIRFACE_AGE_ALIASES = {"03-Sep": "3-9", "Sep-03": "3-9", "3-Sep": "3-9", "Oct-19": "10-19", "19-Oct": "10-19"}
FAIRFACE_OFFICIAL_CSVS = ("fairface_label_train.csv", "fairface_label_val.csv")


def is_fairface_official(root: str | Path) -> bool:
    """The layout FairFace is distributed in: ``train/``, ``val/`` and the two label CSVs."""
    return all((Path(root) / c).is_file() for c in FAIRFACE_OFFICIAL_CSVS)


def read_fairface(
    root: str | Path, labels_csv: str | Path | None = None, tasks: Sequence[Task] | None = None
) -> SampleTable:
    """Read FairFace: ``labels.csv`` (file, age in 9 groups, gender, race in 7), or the official layout
    (``fairface_label_train.csv`` + ``fairface_label_val.csv`` beside ``train/`` and ``val/``; file names keep
    their ``train/``/``val/`` prefix). Spreadsheet-mangled age groups (``03-Sep``, ``Oct-19``) are read as
    ``3-9`` and ``10-19``."""
    tasks = tuple(tasks or fairface_tasks())
    root = Path(root)
    aliases = {"age": FAIRFACE_AGE_ALIASES}
    if labels_csv is None and not (root / "labels.csv").is_file() and is_fairface_official(root):
        parts = [
            read_manifest(root / c, tasks, image_root=root, name="fairface", aliases=aliases)
            for c in FAIRFACE_OFFICIAL_CSVS
        ]
        report = ReadReport(source=f"fairface:{root} (official train + val)")
        for p in parts:
            report.rows_read += p.report.rows_read
            report.kept += p.report.kept
            for k, v in p.report.skipped.items():
                report.skipped.setdefault(k, []).extend(v)
            for k, n in p.report.notes.items():
                report.note(k, n)
        frame = pd.concat([p.frame for p in parts], ignore_index=True)
        return SampleTable(frame, tasks, report, "fairface")
    labels_csv = Path(labels_csv) if labels_csv else root / "labels.csv"
    if not labels_csv.is_file():
        raise DataError(f"FairFace labels file not found: {labels_csv} (nor the official {FAIRFACE_OFFICIAL_CSVS})")
    return read_manifest(labels_csv, tasks, image_root=root, name="fairface", aliases=aliases)


# ---- generic manifest -----------------------------------------------------------------------------------------
def read_manifest(
    csv_path: str | Path,
    tasks: Sequence[Task],
    image_root: str | Path | None = None,
    path_column: str = "file",
    name: str = "manifest",
    aliases: dict[str, dict[str, str]] | None = None,
) -> SampleTable:
    """Read a CSV manifest: one row per image, a path column and one column per declared task.

    A task column may be absent (all labels missing) or empty on some rows (that label missing); a value
    that is not one of the task's levels/classes skips the row with the reason recorded. ``aliases`` maps known
    spellings of a label onto the task's own (``{task: {raw: label}}``), counted in the report.
    """
    aliases = aliases or {}
    csv_path = Path(csv_path)
    image_root = Path(image_root) if image_root else csv_path.parent
    tasks = tuple(tasks)
    report = ReadReport(source=f"{name}:{csv_path}")
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or path_column not in reader.fieldnames:
                raise DataError(f"{csv_path}: no {path_column!r} column (columns: {reader.fieldnames})")
            missing_cols = [t.name for t in tasks if t.name not in reader.fieldnames]
            for c in missing_cols:
                report.note(f"rows without a '{c}' column (label missing)", 0)
            rows = []
            for lineno, rec in enumerate(reader, start=2):
                report.rows_read += 1
                rel = (rec.get(path_column) or "").strip()
                if not rel or None in rec:
                    report.skip("malformed row", f"line {lineno}")
                    continue
                row: dict[str, Any] = {k: v for k, v in rec.items() if k is not None}
                row["path"] = str((image_root / rel).resolve()) if not Path(rel).is_absolute() else rel
                try:
                    for t in tasks:
                        raw = (rec.get(t.name) or "").strip()
                        if raw in aliases.get(t.name, {}):
                            report.note(f"{t.name} labels {raw!r} read as {aliases[t.name][raw]!r}")
                            raw = aliases[t.name][raw]
                        row[t.name] = t.index(raw)
                except KeyError as e:
                    report.skip(f"unknown label ({e.args[0]})", f"line {lineno}")
                    continue
                rows.append(row)
    except UnicodeDecodeError as e:
        raise DataError(f"{csv_path} is not a UTF-8 text CSV: {e}") from e
    except csv.Error as e:
        raise DataError(f"{csv_path} is not a valid CSV: {e}") from e
    report.kept = len(rows)
    if report.rows_read and not rows:
        raise DataError(f"{csv_path}: none of its {report.rows_read} rows is usable ({report.summary()})")
    for t in tasks:
        n_missing = sum(1 for r in rows if r[t.name] == MISSING)
        if n_missing:
            report.note(f"samples without a {t.name} label")
            report.notes[f"samples without a {t.name} label"] = n_missing
    log.info(report.summary())
    return SampleTable(_frame(rows, tasks), tasks, report, name)


def tasks_from_spec(spec: Sequence[Any]) -> tuple[Task, ...]:
    """Tasks declared in a config (:func:`faceattr.tasks.task.task_from_spec`; already built ones are kept)."""
    out = []
    for d in spec:
        try:
            out.append(d if isinstance(d, Task) else task_from_spec(d))
        except ValueError as e:
            raise DataError(str(e)) from e
    return tuple(out)


# ---- Adience fold files ---------------------------------------------------------------------------------------
ADIENCE_GROUPS = ("(0, 2)", "(4, 6)", "(8, 12)", "(15, 20)", "(25, 32)", "(38, 43)", "(48, 53)", "(60, 100)")
_ADIENCE_BOUNDS = tuple(tuple(int(x) for x in g.strip("()").split(",")) for g in ADIENCE_GROUPS)
ADIENCE_COLUMNS = (
    "user_id",
    "original_image",
    "face_id",
    "age",
    "gender",
    "x",
    "y",
    "dx",
    "dy",
    "tilt_ang",
    "fiducial_yaw_angle",
    "fiducial_score",
)


def adience_tasks() -> tuple[Task, ...]:
    mids = tuple((lo + hi) / 2 for lo, hi in _ADIENCE_BOUNDS)
    return (ordinal_task("age", ADIENCE_GROUPS, mids), nominal_task("gender", ("m", "f")))


def adience_age_group(raw: str) -> tuple[int, str]:
    """Map an Adience age field to a group index and how it was mapped ('exact', 'mapped', 'missing').

    A standard range maps to itself; a bare age or a non-standard range maps by its midpoint to the group
    that contains it, else to the nearest group (a tie to the older one). ``None`` or empty is missing.
    """
    raw = raw.strip()
    if raw in ("", "None"):
        return MISSING, "missing"
    if raw in ADIENCE_GROUPS:
        return ADIENCE_GROUPS.index(raw), "exact"
    m = re.fullmatch(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)", raw)
    if m:
        mid = (int(m.group(1)) + int(m.group(2))) / 2
    elif re.fullmatch(r"\d+", raw):
        mid = float(raw)
    else:
        raise ValueError(f"unreadable age {raw!r}")
    dists = [0.0 if lo <= mid <= hi else min(abs(mid - lo), abs(mid - hi)) for lo, hi in _ADIENCE_BOUNDS]
    best = min(dists)
    return max(i for i, d in enumerate(dists) if d == best), "mapped"  # a tie goes to the older group


def read_adience_folds(
    folder: str | Path, folds: Sequence[int] | None = None, image_root: str | Path | None = None
) -> SampleTable:
    """Read Adience ``fold_*_data.txt`` files (tab-separated, as distributed; truncated rows are reported).

    Image paths follow the distribution's layout ``faces/<user_id>/coarse_tilt_aligned_face.<face_id>.<image>``
    under ``image_root`` (default: the folder itself); the files need not exist to read the labels.
    """
    folder = Path(folder)
    files = sorted(folder.glob("fold_*_data.txt"))
    if folds is not None:
        files = [f for f in files if int(f.name.split("_")[1]) in set(folds)]
    if not files:
        raise DataError(f"no Adience fold_*_data.txt files in {folder}")
    root = Path(image_root) if image_root else folder
    tasks = adience_tasks()
    report = ReadReport(source=f"adience:{folder}")
    rows = []
    for fp in files:
        fold = int(fp.name.split("_")[1])
        text = fp.read_text(encoding="utf-8", errors="replace")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        for lineno, line in enumerate(lines[1:], start=2):
            report.rows_read += 1
            where = f"{fp.name}:{lineno}"
            cells = line.rstrip("\r").split("\t")
            if len(cells) <= ADIENCE_COLUMNS.index("gender") + 1:
                # cut before the gender field was closed: the labels themselves may be cut
                report.skip("truncated row (labels incomplete)", where)
                continue
            if len(cells) < len(ADIENCE_COLUMNS):
                report.note("truncated rows kept (labels complete, face box cut)")
            rec = dict(zip(ADIENCE_COLUMNS, cells + [""] * (len(ADIENCE_COLUMNS) - len(cells))))
            try:
                age, how = adience_age_group(rec["age"])
            except ValueError as e:
                report.skip(str(e), where)
                continue
            if how != "exact":
                report.note(f"age labels {how} (bare age, non-standard range or None)")
            g = rec["gender"].strip()
            gender = {"m": 0, "f": 1}.get(g, MISSING)
            if gender == MISSING:
                report.note("gender missing ('u' or empty)")
            rows.append(
                {
                    "path": str(
                        root
                        / "faces"
                        / rec["user_id"]
                        / f"coarse_tilt_aligned_face.{rec['face_id']}.{rec['original_image']}"
                    ),
                    "fold": fold,
                    "user_id": rec["user_id"],
                    "age_raw": rec["age"],
                    "age": age,
                    "gender": gender,
                }
            )
    report.kept = len(rows)
    log.info(report.summary())
    return SampleTable(_frame(rows, tasks), tasks, report, "adience")


def _frame(rows: list[dict[str, Any]], tasks: Sequence[Task]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for t in tasks:
        if t.name not in df:
            df[t.name] = MISSING
        df[t.name] = df[t.name].astype("int64")
    return df
