"""Output safety, as one rule for every command: never lose or damage a user's file.

1. Everything is validated (options, model, data) before any output is opened.
2. :class:`OutputPlan` claims every path a run will write *before work starts*: an output that is also an input,
   that two inputs would write, that is a folder (for a file) or a file (for a folder), or whose folder cannot be
   written, is an :class:`OutputError` (one line, exit 2) and nothing has been touched.
3. Outputs are written to ``<name>.partial`` beside the target and renamed onto it only when complete
   (:func:`atomic_output`, :func:`atomic_write_bytes`). On an error the partial file is removed and the target is
   as it was; on an interruption (Ctrl-C, SIGTERM) a streamed output's partial file is kept with every record that
   was complete, and the target is as it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from faceattr.errors import FaceattrError

log = logging.getLogger(__name__)

PARTIAL = ".partial"


class OutputError(FaceattrError, ValueError):
    """An output that cannot be written safely; raised before any work starts."""


def _key(p: Path) -> str:
    """A path's identity for comparisons: resolved, case as the file system has it."""
    try:
        return str(p.resolve())
    except OSError:
        return str(p.absolute())


def _writable_dir(d: Path) -> None:
    d = d if d.exists() else next((p for p in d.parents if p.exists()), Path("."))
    if not d.is_dir():
        raise OutputError(f"{d}: not a folder, cannot write into it")
    if not os.access(d, os.W_OK | os.X_OK):
        raise OutputError(f"{d}: folder is not writable")


class OutputPlan:
    """The outputs one run will write, checked against each other and against the inputs before work starts."""

    def __init__(self, inputs: Iterable[str | Path] = ()) -> None:
        self.inputs = [Path(p) for p in inputs]
        self._input_keys = {_key(p): p for p in self.inputs}
        self._outputs: dict[str, str] = {}  # resolved output -> what writes it
        self._input_dirs: list[Path] = []

    def add_input_dirs(self, dirs: Iterable[str | Path]) -> None:
        self._input_dirs += [Path(d) for d in dirs if Path(d).is_dir()]

    def claim_file(self, path: str | Path, what: str) -> Path:
        """A file output (e.g. ``-O results.jsonl``)."""
        p = Path(path)
        if p.is_dir():
            raise OutputError(f"{what} {p}: is a folder; give a file name")
        k = _key(p)
        if k in self._input_keys:
            raise OutputError(f"{what} {p}: is also an input; it would be overwritten before it is read")
        if k in self._outputs:
            raise OutputError(f"{what} {p}: would be written twice in this run (also by {self._outputs[k]})")
        _writable_dir(p.parent if str(p.parent) else Path("."))
        self._outputs[k] = what
        return p

    def claim_dir(self, path: str | Path, what: str) -> Path:
        """An output folder (e.g. ``--draw DIR``): it must not be a file, nor lie inside an input folder (its
        files would become inputs of the next run)."""
        d = Path(path)
        if d.exists() and not d.is_dir():
            raise OutputError(f"{what} {d}: is a file, not a folder")
        dk = _key(d)
        for i in self._input_dirs:
            ik = _key(i)
            if dk == ik or dk.startswith(ik.rstrip(os.sep) + os.sep):
                raise OutputError(f"{what} {d}: lies inside the input folder {i}; choose a folder outside the inputs")
        _writable_dir(d)
        return d


@contextlib.contextmanager
def atomic_output(
    path: str | Path,
    mode: str = "w",
    encoding: str | None = "utf-8",
    newline: str | None = "",
    errors: str | None = None,
) -> Iterator[IO]:
    """Open ``<path>.partial`` for writing; rename it onto ``path`` when the block ends normally.

    An exception removes the partial file (``path`` untouched); KeyboardInterrupt/SystemExit keep it, with every
    record written so far, and say so."""
    p = Path(path)
    tmp = p.with_name(p.name + PARTIAL)
    if "b" in mode:
        f: IO = open(tmp, mode)  # noqa: SIM115 - closed below on every path
    else:
        f = open(tmp, mode, encoding=encoding, newline=newline, errors=errors)  # noqa: SIM115
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, p)
    except (KeyboardInterrupt, SystemExit):
        with contextlib.suppress(OSError):
            f.close()
        log.warning("interrupted: %s left as it was; the results so far are in %s", p, tmp)
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            f.close()
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_output(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """UTF-8 text written whole under a temporary name, then renamed onto ``path``."""
    atomic_write_bytes(path, text.encode("utf-8"))


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """A matplotlib figure rendered in memory (format from the suffix) and written atomically."""
    import io

    p = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=p.suffix.lstrip(".") or "png", dpi=dpi)
    atomic_write_bytes(p, buf.getvalue())
    return p


def unique_names(files: list[Path], suffix: str) -> dict[Path, Path]:
    """Output names under an output folder, one per input, that never collide: the input's path relative to the
    inputs' common folder, with ``suffix`` appended to the full name (``a/x.jpg`` -> ``a/x.jpg.png``)."""
    if not files:
        return {}
    res = [Path(_key(f)) for f in files]
    common = Path(os.path.commonpath([str(r.parent) for r in res]))
    # distinct resolved inputs have distinct paths under their common folder, hence distinct names
    return {f: r.relative_to(common).with_name(r.name + suffix) for f, r in zip(files, res)}
