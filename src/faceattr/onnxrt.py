"""onnxruntime, loaded the way every part of faceattr uses it: telemetry off, sessions without busy-waiting.

Both the face detector (:mod:`faceattr.vision`) and the attribute network (:mod:`faceattr.runtime`) run on
onnxruntime; this module is below both so that they open their sessions alike.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def import_onnxruntime() -> Any:
    """onnxruntime, imported with its telemetry off. From 1.2x on Linux it writes a device id and a database under
    ``~/.cache/Microsoft/DeveloperTools/.onnxruntime/`` when it loads, and may send usage events; an offline tool
    should do neither. ``ORT_DISABLE_TELEMETRY=1``, read when the library loads, stops both (a user who sets the
    variable keeps their value)."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    return onnxruntime


def open_session(path: str | Path, threads: int | None = None, providers: list[str] | None = None) -> Any:
    """An ``InferenceSession`` for ``path`` with ``threads`` intra-op threads (None: onnxruntime's default, one per
    physical core) and no busy-waiting: its threads sleep between runs instead of spinning, because they share the
    cores with decoding, detection and other requests' work (``docs/decisions/`` "one thread per pipeline")."""
    ort = import_onnxruntime()
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"])
