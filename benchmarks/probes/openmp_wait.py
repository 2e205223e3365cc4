"""The default detector's OpenMP wait policy: libgomp's default (idle threads busy-wait, GOMP_SPINCOUNT=300000,
~3 ms), no spinning (OMP_WAIT_POLICY=PASSIVE), two shorter spins (GOMP_SPINCOUNT 3,000 and 1,000) and what faceattr
sets when it loads yuface's libfacedetection (GOMP_SPINCOUNT=DETECTOR_SPINCOUNT, faceattr.vision.detectors.yuface),
on the default
path, on an idle machine and on one busy with another job.

    python benchmarks/probes/openmp_wait.py [--n 100] [--rounds 3] [--tag T]

Each arm runs in a fresh process (libgomp reads its settings once, when loaded): ``Predictor.from_pretrained(
threads=2)`` on the first N UTKFace photos (200 x 200) and the six group photos resized to 640 px wide, timing
detection (``faces_and_chips``) and the network (``predict_chips``) of each photo after three warm-up photos. The
arms alternate ``--rounds`` times so that drift on a shared machine falls on all of them. "busy": two other processes
multiply matrices for the whole measurement (another job on the same 2 cores). Medians over all rounds' photos.
Writes benchmarks/results/openmp-wait[-TAG].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/_common.py
from _common import default_path_photos, md_table, write  # noqa: E402
from faceattr.vision.detectors.yuface import DETECTOR_SPINCOUNT, OPENMP_WAIT_VARIABLES

FACEATTR = f"faceattr (GOMP_SPINCOUNT={DETECTOR_SPINCOUNT})"

ARMS = {
    "libgomp default (GOMP_SPINCOUNT=300000)": {"GOMP_SPINCOUNT": "300000"},  # what libgomp does when nothing is set
    "no spin (OMP_WAIT_POLICY=PASSIVE)": {"OMP_WAIT_POLICY": "PASSIVE"},
    "GOMP_SPINCOUNT=3000": {"GOMP_SPINCOUNT": "3000"},
    "GOMP_SPINCOUNT=1000": {"GOMP_SPINCOUNT": "1000"},
    FACEATTR: {},  # faceattr sets GOMP_SPINCOUNT=DETECTOR_SPINCOUNT while it loads yuface
}
LOAD = "import numpy as np\na = np.random.rand(400, 400)\nwhile True:\n    a = np.tanh(a @ a)\n"


def worker(n: int) -> None:
    from faceattr.runtime.predictor import Predictor

    sets = default_path_photos(n)
    p = Predictor.from_pretrained(threads=2)
    out: dict[str, object] = {"backend": p.backend.name}
    for name, photos in sets.items():
        det, net = [], []
        for i, rgb in enumerate(photos[:3] + photos):
            t0 = time.perf_counter()
            faces, chips = p.faces_and_chips(rgb)
            t1 = time.perf_counter()
            if len(chips):
                p.predict_chips(chips)
            t2 = time.perf_counter()
            if i >= 3:
                det.append((t1 - t0) * 1000)
                net.append((t2 - t1) * 1000)
        out[name] = {"detect": det, "network": net}
    print(json.dumps(out))


def run_arm(env_extra: dict[str, str], n: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_WAIT_VARIABLES}
    env.update(env_extra)
    res = subprocess.run(
        [sys.executable, __file__, "--worker", "--n", str(n)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tag", default="", help="suffix of the result file names")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.n)
        return
    rows = []
    for condition in ("idle", "busy"):
        load = []
        if condition == "busy":
            env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            load = [subprocess.Popen([sys.executable, "-c", LOAD], env=env) for _ in range(2)]
            time.sleep(2)
        try:
            samples: dict[tuple[str, str], dict[str, list[float]]] = {}
            backend = ""
            for _ in range(a.rounds):
                for arm, extra in ARMS.items():
                    out = run_arm(extra, a.n)
                    backend = out.pop("backend")
                    for sname, parts in out.items():
                        acc = samples.setdefault((arm, sname), {"detect": [], "network": []})
                        for k in acc:
                            acc[k] += parts[k]
        finally:
            for proc in load:
                proc.kill()
                proc.wait()
        for (arm, sname), parts in samples.items():
            total = np.add(parts["detect"], parts["network"])
            rows.append(
                {
                    "machine": condition,
                    "photos": sname,
                    "wait policy": arm,
                    "n": len(total),
                    "detect ms": round(float(np.median(parts["detect"])), 1),
                    "network ms": round(float(np.median(parts["network"])), 1),
                    "total ms": round(float(np.median(total)), 1),
                    "total p90 ms": round(float(np.percentile(total, 90)), 1),
                    "runtime": backend,
                }
            )
    for r in rows:
        base = next(
            b
            for b in rows
            if b["machine"] == r["machine"] and b["photos"] == r["photos"] and b["wait policy"] == FACEATTR
        )
        r["vs faceattr (total)"] = round(r["total ms"] / base["total ms"], 2)
    cmd = f"python benchmarks/probes/openmp_wait.py --n {a.n} --rounds {a.rounds}" + (
        f" --tag {a.tag}" if a.tag else ""
    )
    cols = ["machine", "photos", "wait policy", "n", "detect ms", "network ms", "total ms", "total p90 ms"]
    md = (
        f"# The detector's OpenMP wait policy\n\n`{cmd}`: the default path ({rows[0]['runtime']} + flip TTA, yuface) "
        "under OpenMP wait policies for the detector's pool, faceattr's last; each arm a fresh process, "
        f'alternating {a.rounds} times; "busy": two other processes computing on the same cores.\n\n'
        + md_table(rows, [*cols, "vs faceattr (total)"])
        + "\n"
    )
    write(
        "openmp-wait" + (f"-{a.tag}" if a.tag else ""),
        {"rows": rows},
        md,
        cmd,
        results=Path(__file__).resolve().parent / "results",
    )


if __name__ == "__main__":
    main()
