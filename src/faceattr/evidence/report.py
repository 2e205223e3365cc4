"""The one report writer of the evidence commands (evaluate, audit, ablate, claims): markdown tables, confusion
matrices, and writing a report folder's files, each atomically, after the folder has been claimed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> list[str]:
    """Markdown table lines: the header, the separator, one line per row (cells as given, ``None`` empty)."""
    out = ["| " + " | ".join(str(h) for h in header) + " |", "|---" * len(header) + "|"]
    for r in rows:
        out.append("| " + " | ".join("" if c is None else str(c) for c in r) + " |")
    return out


def confusion(labels: Sequence[Any], cm: Sequence[Sequence[int]]) -> list[str]:
    """A confusion matrix as a markdown table, true labels down, predictions across."""
    return table(["true \\ predicted", *labels], ([lab, *row] for lab, row in zip(labels, cm)))


def write_files(out_dir: str | Path, files: Mapping[str, str | bytes]) -> dict[str, Path]:
    """Write each file of a report folder atomically (text as UTF-8); returns name -> path."""
    from faceattr.safeio import atomic_write_bytes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, content in files.items():
        data = content.encode("utf-8") if isinstance(content, str) else content
        atomic_write_bytes(out / name, data)
        paths[name] = out / name
    return paths
