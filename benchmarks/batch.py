"""Batch inference throughput: ``faceattr batch`` (process pool for decoding/detection/alignment, INT8 ONNX network
on batches of faces, sharded Parquet) against ``faceattr predict`` (one photo at a time, the default torch model,
JSON lines) on the same N photos, in the same run; peak resident memory of each (the batch job's workers included).

    python benchmarks/batch.py [--n 10000] [--workers 2]

The photos are symbolic links to the first N UTKFace images (in a temporary folder: the data is not copied).
Writes benchmarks/results/batch.{json,md}.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import SHARED, md_table, write


def _run(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and the peak RSS (MB) of the largest process of ``cmd`` and its children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    secs = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return secs, max(before, after) / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    src = SHARED / "data" / "utkface" / "UTKFace"
    files = sorted(p for p in src.iterdir() if p.is_file())[: a.n]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "photos"
        folder.mkdir()
        for f in files:
            (folder / f.name).symlink_to(f.resolve())
        fx = [sys.executable, "-m", "faceattr", "-q"]
        # batch first: RUSAGE_CHILDREN keeps the maximum over all children, so the smaller job must not come last
        t_b, rss_b = _run(fx + ["batch", str(folder), "--out", str(Path(d) / "out"), "--workers", str(a.workers)])
        import pandas as pd

        df = pd.concat([pd.read_parquet(p) for p in sorted((Path(d) / "out").glob("part-*.parquet"))])
        faces_b = int((df["face"].notna()).sum())
        t_p, _ = _run(fx + ["predict", str(folder), "-O", str(Path(d) / "p.jsonl")])
        faces_p = sum('"box"' in line for line in (Path(d) / "p.jsonl").read_text().splitlines())
    rows.append(
        {
            "command": "faceattr predict (torch, one photo at a time)",
            "photos": len(files),
            "faces": faces_p,
            "seconds": round(t_p, 1),
            "faces/s": round(faces_p / t_p, 1),
        }
    )
    rows.append(
        {
            "command": f"faceattr batch (INT8 ONNX, {a.workers} workers)",
            "photos": len(files),
            "faces": faces_b,
            "seconds": round(t_b, 1),
            "faces/s": round(faces_b / t_b, 1),
            "peak RSS MB (largest process)": round(rss_b),
        }
    )
    res = {"n": len(files), "rows": rows, "speedup": round((faces_b / t_b) / (faces_p / t_p), 2)}
    md = (
        f"# Batch inference\n\n`python benchmarks/batch.py --n {a.n} --workers {a.workers}`: the first {len(files)} "
        f"UTKFace photos, detection with dlib, one run on this machine.\n\n"
        + md_table(rows, ["command", "photos", "faces", "seconds", "faces/s", "peak RSS MB (largest process)"])
        + f"\n\n**batch / predict throughput: {res['speedup']}×**\n"
    )
    write("batch", res, md, f"python benchmarks/batch.py --n {a.n} --workers {a.workers}")
    print(md)


if __name__ == "__main__":
    main()
