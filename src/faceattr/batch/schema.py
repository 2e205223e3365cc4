"""The rows of a batch job and their one Arrow schema, the same for every shard and engine; writing a part and
trusting it again on a rerun."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from faceattr.runtime.meta import ModelMeta
from faceattr.runtime.results import attribute_columns
from faceattr.tasks.kinds import kind_of

BATCH_FORMAT = 2  # 2: fixed Arrow schema, parts checked on resume, _batch.json, --max-pixels in the fingerprint


def row_columns(meta: ModelMeta) -> list[str]:
    """The columns of every batch row, fixed by the model's tasks (the same schema in every shard and engine)."""
    cols = ["source", "model", "width", "height", "num_faces", "face", "box", "score", "landmarks"]
    for t in meta.tasks:
        cols += [t.name, *kind_of(t).columns(t)]
    return [*cols, "error", "message"]


INT_COLUMNS = ("width", "height", "num_faces", "face")
STRING_COLUMNS = ("source", "model", "landmarks", "error", "message")


def arrow_schema(meta: ModelMeta) -> Any:
    """The one Arrow schema of a batch job's rows (:func:`row_columns`), the same for every shard and engine."""
    import pyarrow as pa

    fields = []
    labels = {t.name for t in meta.tasks}
    for c in row_columns(meta):
        if c in INT_COLUMNS:
            typ = pa.int64()
        elif c == "box":
            typ = pa.list_(pa.float64())
        elif c in STRING_COLUMNS or c in labels:
            typ = pa.string()
        else:
            typ = pa.float64()
        fields.append(pa.field(c, typ))
    return pa.schema(fields)


def text(s: Any) -> Any:
    """A file name as valid UTF-8 for Parquet: undecodable bytes (kept by Python as surrogates) become ``\\xNN``."""
    if isinstance(s, str):
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return s


def table(rows: list[dict[str, Any]], meta: ModelMeta) -> Any:
    """Rows as an Arrow table with the job's fixed schema."""
    import pyarrow as pa

    schema = arrow_schema(meta)
    cols: dict[str, list[Any]] = {c: [] for c in schema.names}
    for r in rows:
        for c in schema.names:
            v = r.get(c)
            if c in ("source", "error", "message"):
                v = text(v)
            cols[c].append(None if isinstance(v, float) and v != v and c in STRING_COLUMNS else v)
    return pa.Table.from_pydict(cols, schema=schema)


def part_is_complete(path: Path, schema: Any, fingerprint: str) -> bool:
    """Whether a part file reads back whole, with the job's schema and fingerprint and the row count it recorded."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        md = pf.metadata.metadata or {}
        if md.get(b"faceattr.fingerprint", b"").decode() != fingerprint:
            return False
        if not pf.schema_arrow.remove_metadata().equals(schema):
            return False
        rows = int(md.get(b"faceattr.rows", b"-1"))
        return rows == pf.metadata.num_rows and pf.read().num_rows == rows
    except Exception:  # noqa: BLE001 - any unreadable part is redone
        return False


def write_part(tbl: Any, target: Path, fingerprint: str) -> None:
    """One part, atomically, with the job's fingerprint and its row count in the Parquet metadata."""
    import pyarrow.parquet as pq

    from faceattr.safeio import atomic_output

    tbl = tbl.replace_schema_metadata(
        {"faceattr.fingerprint": fingerprint, "faceattr.rows": str(tbl.num_rows), "faceattr.format": str(BATCH_FORMAT)}
    )
    with atomic_output(target, "wb") as f:
        pq.write_table(tbl, f)


def rows_of(prep: dict[str, Any], attrs: list[dict[str, Any]], model: str) -> list[dict[str, Any]]:
    base = {"source": prep["source"], "model": model}
    if "error" in prep:
        return [{**base, "num_faces": None, "face": None, "error": prep["error"]}]
    base.update({"width": prep["width"], "height": prep["height"], "num_faces": len(prep["faces"])})
    if not prep["faces"]:
        return [{**base, "face": None, "message": "no face found"}]
    rows = []
    for i, (f, a) in enumerate(zip(prep["faces"], attrs)):
        row: dict[str, Any] = {**base, "face": i}
        if f:
            row.update({"box": f["box"], "score": f["score"], "landmarks": json.dumps(f["landmarks"])})
        row.update(attribute_columns(a))
        rows.append(row)
    return rows
