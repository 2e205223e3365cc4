"""Behaviour users rely on stays the same: the answers of ``faceattr predict`` (the example photo and the group
photos), ``faceattr evaluate --json`` (UTKFace test) and ``/v1/analyze`` are compared with committed golden files,
number by number within 1e-6.

The INT8 model's outputs differ between CPU models, so the default-path goldens are compared only on the CPU they
were written on (``cpu`` in each file); the float32 model's are compared everywhere. Rewrite them, after a change
that is meant to change answers, with ``FACEATTR_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import DATA, REPO

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("FACEATTR_UPDATE_GOLDEN") == "1"
TOL = 1e-6
FLOAT32 = str(REPO / "src/faceattr/weights/faceattr-utkface-fairface-mobilenetv2.onnx")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _strip(obj: Any) -> Any:
    """Drops what names this machine's paths rather than the answer."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in ("file", "checkpoint", "model")}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _close(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        assert sorted(a) == sorted(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            _close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{i}]")
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        assert abs(a - b) <= TOL, f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def check(name: str, answer: Any, per_cpu: bool) -> None:
    path = GOLDEN / f"{name}.json"
    record = {"cpu": cpu_model() if per_cpu else None, "answer": _strip(answer)}
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        return
    if not path.is_file():
        pytest.fail(f"{path} is missing: write it with FACEATTR_UPDATE_GOLDEN=1")
    want = json.loads(path.read_text())
    if per_cpu and want["cpu"] != record["cpu"]:
        pytest.skip(f"{name}: written on {want['cpu']!r}, this CPU is {record['cpu']!r} (INT8 outputs differ by CPU)")
    _close(record["answer"], want["answer"], name)


def faceattr(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "faceattr", *args], capture_output=True, text=True, check=False, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def jsonl(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


GROUP = DATA / "group-photos"


@pytest.mark.slow
@pytest.mark.parametrize("path", ["default", "float32"])
def test_predict_answers_are_unchanged(path: str) -> None:
    extra = [] if path == "default" else ["--model", FLOAT32, "--no-tta-flip"]
    answer = {"example": jsonl(faceattr("predict", "--example", *extra))}
    if GROUP.is_dir():
        answer["group"] = jsonl(faceattr("predict", str(GROUP), *extra))
    else:
        pytest.skip(f"test data not found: {GROUP}")
    check(f"predict-{path}", answer, per_cpu=path == "default")


@pytest.mark.slow
@pytest.mark.parametrize("path", ["default", "float32"])
def test_evaluate_answers_are_unchanged(path: str) -> None:
    utk = DATA / "utkface"
    if not utk.is_dir():
        pytest.skip(f"test data not found: {utk}")
    extra = [] if path == "default" else ["--checkpoint", FLOAT32]
    report = json.loads(faceattr("evaluate", "--data", f"utkface:{utk}", "--split", "test", "--json", *extra))
    report.pop("data", None)
    report.pop("read_report", None)
    check(f"evaluate-utkface-test-{path}", report, per_cpu=path == "default")


@pytest.mark.slow
def test_the_service_answer_is_unchanged() -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from faceattr import Predictor
    from faceattr.serve import ServeSettings, create_app

    photo = REPO / "src/faceattr/examples/astronaut.png"
    with TestClient(create_app(Predictor.from_pretrained(), ServeSettings())) as c:
        r = c.post("/v1/analyze", files={"image": ("astronaut.png", photo.read_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    body.pop("elapsed_ms", None)
    for res in body.get("results", []):
        res.pop("elapsed_ms", None)
    check("serve-analyze-default", body, per_cpu=True)
