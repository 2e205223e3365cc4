"""Memory on a long folder: ``faceattr predict`` over N photos, its resident memory sampled as results stream out.

    python benchmarks/stream.py [--n 10000] [--model M] [--detector dlib] [--no-detect]

Without ``--model``/``--detector`` it runs the default path (`faceattr predict` without flags: the shipped INT8
model with flip TTA, the default detector), the path users get.

The folder is made of symbolic links to the first N UTKFace images (in a temporary directory: the data is
not copied). The CLI runs as a child process; its VmRSS is read from /proc every ``--every`` result lines.
Flat means: the growth from the first sample after warm-up to the last is small against the total.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import SHARED, md_table, write


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--model")
    ap.add_argument("--detector", help="default: the CLI's default detector")
    ap.add_argument("--no-detect", action="store_true")
    a = ap.parse_args()
    src = SHARED / "data" / "utkface" / "UTKFace"
    files = sorted(p for p in src.iterdir() if p.is_file())[: a.n]
    if len(files) < a.n:
        sys.exit(f"only {len(files)} images in {src}")
    with tempfile.TemporaryDirectory() as tmp:
        for i, f in enumerate(files):
            os.symlink(f, Path(tmp) / f"{i:05d}_{f.name}")
        cmd = [sys.executable, "-m", "faceattr", "-q", "predict", tmp, "--threads", "2"]
        cmd += ["--detector", a.detector] if a.detector else []
        cmd += (["--model", a.model] if a.model else []) + (["--no-detect"] if a.no_detect else [])
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        samples, lines, errors, faces = [], 0, 0, 0
        assert proc.stdout is not None
        for line in proc.stdout:
            lines += 1
            errors += '"error"' in line
            faces += line.count('"box"')
            if lines % a.every == 0:
                samples.append(
                    {
                        "results": lines,
                        "rss_mb": round(rss_mb(proc.pid), 1),
                        "seconds": round(time.perf_counter() - t0, 1),
                    }
                )
        rc = proc.wait()
    if rc != 0 or lines != a.n:
        sys.exit(f"predict exited with {rc} after {lines} of {a.n} results")
    warm = samples[1] if len(samples) > 2 else samples[0]
    last = samples[-1]
    summary = [
        {
            "photos": a.n,
            "faces": faces,
            "errors": errors,
            "seconds": last["seconds"],
            "rss after warm-up (MB)": warm["rss_mb"],
            "rss at the end (MB)": last["rss_mb"],
            "growth (MB)": round(last["rss_mb"] - warm["rss_mb"], 1),
            "peak sampled (MB)": max(s["rss_mb"] for s in samples),
        }
    ]
    md = (
        "## Summary\n\n"
        + md_table(summary, list(summary[0]))
        + "\n\n## Samples\n\n"
        + md_table(samples, list(samples[0]))
    )
    cmd_s = (
        f"python benchmarks/stream.py --n {a.n}"
        + (f" --detector {a.detector}" if a.detector else "")
        + (" --no-detect" if a.no_detect else "")
        + (f" --model {a.model}" if a.model else "")
    )
    write("stream", {"summary": summary, "samples": samples}, md, cmd_s)


if __name__ == "__main__":
    main()
