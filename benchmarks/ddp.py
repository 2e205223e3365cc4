"""Training throughput with 1 and 2 processes (``torchrun``, DistributedDataParallel over gloo on CPUs, NCCL on
GPUs) against the plain single-process ``faceattr train``, in the same run, on the same images and settings.

    python benchmarks/ddp.py [--steps 24] [--batch 64] [--size 128]

Each run trains ``--steps`` steps of the global batch on the first 4,096 UTKFace training images (one epoch, then
a small validation) with the CPU's cores split between the processes (``train.threads`` = cores / processes).
Writes benchmarks/results/ddp.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import SHARED, md_table, write

REPO = Path(__file__).resolve().parents[1]


def _train(out: Path, name: str, procs: int | None, a: argparse.Namespace, threads: int) -> dict[str, float]:
    over = [
        f"data.root={SHARED / 'data' / 'utkface'}",
        f"data.image_size={a.size}",
        "data.max_train=4096",
        "data.max_val=128",
        "train.epochs=1",
        f"train.batch_size={a.batch}",
        f"train.max_steps_per_epoch={a.steps}",
        f"train.threads={threads}",
        f"train.device={a.device}",
    ]
    fx = ["-m", "faceattr", "-q", "train", "-c", str(REPO / "configs" / "utkface.yaml"), "--name", name]
    fx += ["--out-dir", str(out)] + [f"-o{o}" for o in over]
    if procs is None:
        cmd = [sys.executable, *fx]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}", *fx]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    with open(out / name / "log.csv", newline="") as f:
        row = next(csv.DictReader(f))
    return {"images_per_s": float(row["images_per_s"]), "epoch_seconds": float(row["epoch_seconds"])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--device", default="cpu", help="cpu, or auto to use the GPUs where there are")
    a = ap.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as d:
        out = Path(d)
        _train(out, "warm", None, argparse.Namespace(**{**vars(a), "steps": 2}), cores)  # decode + cache once
        for label, procs in (("faceattr train (one process)", None), ("torchrun, 1 process", 1)) + tuple(
            (f"torchrun, {n} processes", n) for n in (2,) if n <= max(2, cores)
        ):
            n = procs or 1
            r = _train(out, f"p{procs}", procs, a, max(1, cores // n))
            rows.append({"command": label, "processes": n, "threads each": max(1, cores // n), **r})
    base = rows[0]["images_per_s"]
    for r in rows:
        r["images/s"] = round(r.pop("images_per_s"), 1)
        r["vs one process"] = round(r["images/s"] / base, 2)
        r["epoch seconds"] = round(r.pop("epoch_seconds"), 1)
    cmd = f"python benchmarks/ddp.py --steps {a.steps} --batch {a.batch} --size {a.size} --device {a.device}"
    md = (
        f"# Multi-process training\n\n`{cmd}`: {a.steps} steps of a global batch of {a.batch} at {a.size} px "
        f"(UTKFace, the recipe's multi-task network), one run on this machine ({cores} cores). The processes share "
        "the cores: on a CPU machine more processes split the same arithmetic, so the gain is bounded by what one "
        "process leaves unused; DDP pays for the gradient all-reduce and the batch-norm statistics exchanged over "
        "gloo at every step.\n\n"
        + md_table(rows, ["command", "processes", "threads each", "images/s", "vs one process", "epoch seconds"])
        + "\n"
    )
    write("ddp", {"rows": rows, "steps": a.steps, "batch": a.batch, "size": a.size}, md, cmd)
    print(md)


if __name__ == "__main__":
    main()
