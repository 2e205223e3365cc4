"""Load on ``faceattr serve``: N concurrent clients for S seconds on loopback, with micro-batching and without.

    python benchmarks/serve_load.py [--clients 50] [--seconds 60]

Each client (asyncio + httpx, in this process) posts UTKFace photos (one face each, 200 x 200, cycling through 200
of them) one after another; a 503 (deliberate shedding when more requests are in flight than the server allows) is
counted and retried after 50 ms. The server is a separate ``faceattr serve`` process (the default shipped model
and detector); its resident memory is sampled every 0.5 s. Errors are 5xx other than 503, and failed connections.
Writes benchmarks/results/serve-load.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time

import numpy as np

from _common import SHARED, md_table, write


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _client(url: str, photos: list[bytes], stop: float, k: int, out: dict) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=60) as c:
        i = k
        while time.perf_counter() < stop:
            data = photos[i % len(photos)]
            i += 7
            t0 = time.perf_counter()
            try:
                r = await c.post(url, files={"image": ("p.jpg", data, "image/jpeg")})
            except httpx.HTTPError:
                out["errors"] += 1
                continue
            dt = time.perf_counter() - t0
            if r.status_code == 200:
                out["lat"].append(dt)
                out["faces"] += r.json()["results"][0]["num_faces"]
            elif r.status_code == 503:
                out["shed"] += 1
                await asyncio.sleep(0.05)
            else:
                out["errors"] += 1


def _load(url: str, photos: list[bytes], clients: int, seconds: float) -> dict:
    out: dict = {"lat": [], "faces": 0, "shed": 0, "errors": 0}
    stop = time.perf_counter() + seconds

    async def main() -> None:
        await asyncio.gather(*(_client(url, photos, stop, k, out) for k in range(clients)))

    t0 = time.perf_counter()
    asyncio.run(main())
    out["seconds"] = time.perf_counter() - t0
    return out


def run(label: str, extra: list[str], photos: list[bytes], a: argparse.Namespace) -> dict:
    import httpx
    import psutil

    port = _port()
    cmd = [sys.executable, "-m", "faceattr", "-q", "serve", "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        # warm up (model, detector, first batches)
        _load(base + "/v1/analyze", photos, 4, 3)
        rss: list[float] = []
        ps = psutil.Process(proc.pid)
        done = False

        def sample() -> None:
            while not done:
                rss.append(ps.memory_info().rss / 2**20)
                time.sleep(0.5)

        import threading

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        res = _load(base + "/v1/analyze", photos, a.clients, a.seconds)
        done = True
        th.join()
    finally:
        proc.terminate()
        proc.wait(20)
    lat = np.array(res["lat"]) * 1000
    q = max(1, len(rss) // 4)
    return {
        "server": label,
        "requests ok": len(lat),
        "errors": res["errors"],
        "shed (503)": res["shed"],
        "faces/s": round(res["faces"] / res["seconds"], 1),
        "p50 ms": round(float(np.percentile(lat, 50)), 0) if len(lat) else None,
        "p95 ms": round(float(np.percentile(lat, 95)), 0) if len(lat) else None,
        "p99 ms": round(float(np.percentile(lat, 99)), 0) if len(lat) else None,
        "RSS MB 1st quarter": round(max(rss[:q])) if rss else None,
        "RSS MB last quarter": round(max(rss[-q:])) if rss else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--runtime", default="auto", help="the server's --runtime (auto: the default ONNX model)")
    a = ap.parse_args()
    src = sorted((SHARED / "data" / "utkface" / "UTKFace").iterdir())[:200]
    photos = [p.read_bytes() for p in src]
    rt = ["--runtime", a.runtime]
    rows = [
        run(f"micro-batching on (default), runtime {a.runtime}", rt, photos, a),
        run(f"micro-batching off, runtime {a.runtime}", [*rt, "--no-microbatch"], photos, a),
    ]
    ratio = rows[0]["faces/s"] / rows[1]["faces/s"] if rows[1]["faces/s"] else float("nan")
    cmd = f"python benchmarks/serve_load.py --clients {a.clients} --seconds {a.seconds:g}"
    if a.runtime != "auto":
        cmd += f" --runtime {a.runtime}"
    cols = list(rows[0])
    md = (
        f"# Service under load\n\n`{cmd}`: {a.clients} concurrent clients for {a.seconds:g} s each way, posting "
        "UTKFace photos (one face each) to `faceattr serve` (shipped model on the given runtime, default "
        "detector) on loopback; one run on this machine (2 cores shared by the clients and the server). "
        "503 = deliberate shedding beyond `--max-inflight` (32), retried by the client after 50 ms; "
        "errors = other 5xx and failed connections.\n\n"
        + md_table(rows, cols)
        + f"\n\n**micro-batching on / off throughput: {ratio:.2f}×**\n"
    )
    write(
        "serve-load" + ("" if a.runtime == "auto" else f"-{a.runtime}"),
        {"rows": rows, "ratio": round(ratio, 3), "clients": a.clients, "seconds": a.seconds},
        md,
        cmd,
    )
    print(md)


if __name__ == "__main__":
    main()
