"""Batch inference throughput: ``faceattr batch`` (process pool for decoding/detection/alignment, INT8 ONNX network
on batches of faces, sharded Parquet) against ``faceattr predict`` (one photo at a time, the default torch model,
JSON lines) on the same N photos, in the same run; peak resident memory of each (the batch job's workers included).

    python benchmarks/batch.py [--n 10000] [--workers 2]

The photos are symbolic links to the first N UTKFace images (in a temporary folder: the data is not copied).
Writes benchmarks/results/batch.{json,md}.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import SHARED, md_table, write


def _run(cmd: list[str]) -> tuple[float, dict[str, float]]:
    """Wall seconds, and the memory (PSS) of ``cmd`` with all its children sampled every 0.5 s: the peak, and
    the peak of the first and of the last quarter of the run (memory is flat when those two agree)."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ps = psutil.Process(proc.pid)
    samples: list[tuple[float, float]] = []
    while proc.poll() is None:
        total = 0
        try:
            for q in [ps, *ps.children(recursive=True)]:
                try:
                    total += q.memory_full_info().pss  # shared pages (Ray's object store) counted once
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        samples.append((time.perf_counter() - t0, total / 2**20))
        time.sleep(0.5)
    secs = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    q1 = [m for t, m in samples if t <= secs / 4] or [0.0]
    q4 = [m for t, m in samples if t >= 3 * secs / 4] or [0.0]
    return secs, {
        "peak PSS MB": round(max(m for _, m in samples)) if samples else 0,
        "PSS MB, 1st quarter": round(max(q1)),
        "PSS MB, last quarter": round(max(q4)),
    }


def _faces(out: Path) -> int:
    import pandas as pd

    df = pd.concat([pd.read_parquet(p) for p in sorted(out.glob("*.parquet"))])
    return int(df["face"].notna().sum())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-ray", action="store_true", help="leave out the Ray Data engine")
    a = ap.parse_args()
    src = SHARED / "data" / "utkface" / "UTKFace"
    files = sorted(p for p in src.iterdir() if p.is_file())[: a.n]
    rows = []
    mem_cols = ["peak PSS MB", "PSS MB, 1st quarter", "PSS MB, last quarter"]
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "photos"
        folder.mkdir()
        for f in files:
            (folder / f.name).symlink_to(f.resolve())
        fx = [sys.executable, "-m", "faceattr", "-q"]
        t_p, mem_p = _run(fx + ["predict", str(folder), "-O", str(Path(d) / "p.jsonl")])
        faces_p = sum('"box"' in line for line in (Path(d) / "p.jsonl").read_text().splitlines())
        rows.append({"command": "faceattr predict (default: one photo at a time)", "faces": faces_p, "s": t_p, **mem_p})
        out = Path(d) / "out"
        t_b, mem_b = _run(fx + ["batch", str(folder), "--out", str(out), "--workers", str(a.workers)])
        rows.append(
            {"command": f"faceattr batch (local, {a.workers} workers)", "faces": _faces(out), "s": t_b, **mem_b}
        )
        if not a.no_ray:
            out = Path(d) / "out-ray"
            t_r, mem_r = _run(
                fx + ["batch", str(folder), "--out", str(out), "--engine", "ray", "--actors", str(a.workers)]
            )
            rows.append(
                {
                    "command": f"faceattr batch --engine ray ({a.workers} actors, local Ray)",
                    "faces": _faces(out),
                    "s": t_r,
                    **mem_r,
                }
            )
    base = rows[0]["faces"] / rows[0]["s"]
    for r in rows:
        r["photos"] = len(files)
        r["faces/s"] = round(r["faces"] / r["s"], 1)
        r["vs predict"] = round(r["faces/s"] / base, 2)
        r["seconds"] = round(r.pop("s"), 1)
    res = {"n": len(files), "rows": rows, "speedup": rows[1]["vs predict"]}
    cmd = f"python benchmarks/batch.py --n {a.n} --workers {a.workers}" + (" --no-ray" if a.no_ray else "")
    md = (
        f"# Batch inference\n\n`{cmd}`: the first {len(files)} UTKFace photos, one run on this machine. Memory: the "
        "proportional set size (PSS: resident memory with each shared page split among the processes that map it, "
        "so Ray's shared object store counts once) of the command and all its processes, Ray's daemons included, "
        "sampled every 0.5 s; flat when the first and last quarters of the run agree.\n\n"
        + md_table(rows, ["command", "photos", "faces", "seconds", "faces/s", "vs predict", *mem_cols])
        + f"\n\n**batch / predict throughput: {res['speedup']}×**\n"
    )
    write("batch", res, md, cmd)
    print(md)


if __name__ == "__main__":
    main()
