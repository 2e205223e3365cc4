"""The service under faults: a load of good and malformed requests mixed, and a burst of requests past their deadline.

    python benchmarks/serve_faults.py [--clients 50] [--seconds 30] [--bad 0.1]

Part 1, mixed load: ``--clients`` concurrent clients (asyncio + httpx, in this process) post UTKFace photos for
``--seconds`` to a ``faceattr serve`` process on loopback; a share ``--bad`` of the requests is malformed, drawn
from eight kinds (not an image, a cut multipart body, bad JSON, JSON nested 100,000 deep, an unknown option, a bad
``max_faces``, an empty file, a wrong Content-Type). Every 200 answer is compared with the answer the same photo
got alone before the load (age, gender and race of every face, within 1e-6): a difference is a *wrong answer*.
Counted: good requests answered, malformed ones answered with their 4xx, wrong answers, and 5xx other than the
documented 503 (shed) and 504 (deadline).

Part 2, abandoned work: a server with ``--timeout 0.3`` gets 12 concurrent requests of 12 group photos each (each
far over its deadline: 504), then one small request is timed until it is answered 200; the server's CPU time is
sampled meanwhile. Requests past their deadline start no new stage, so the small request waits only for the
stages that were already running.

Writes benchmarks/results/serve-faults.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time

from _common import SHARED, md_table, write


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(extra: list[str]) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _port()
    cmd = [sys.executable, "-m", "faceattr", "-q", "serve", "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start")


def _faces(body: dict) -> list:
    return [{k: v for k, v in f.items() if k in ("age", "gender", "race", "box")} for f in body["results"][0]["faces"]]


def _same(a: object, b: object) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-6
    return a == b


BAD_KINDS = (
    "not_an_image",
    "cut_multipart",
    "bad_json",
    "deep_json",
    "unknown_option",
    "bad_max_faces",
    "empty",
    "wrong_type",
)


async def _bad(c, url: str, kind: str, photo: bytes):  # noqa: ANN001
    b = "faceattrfault"
    if kind == "not_an_image":
        return await c.post(url, files={"image": ("x.jpg", b"not a photo", "image/jpeg")})
    if kind == "cut_multipart":
        head = f'--{b}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'.encode()
        return await c.post(
            url, content=head + photo[:300], headers={"Content-Type": f"multipart/form-data; boundary={b}"}
        )
    if kind == "bad_json":
        return await c.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
    if kind == "deep_json":
        return await c.post(url, content=b"[" * 100_000 + b"]" * 100_000, headers={"Content-Type": "application/json"})
    if kind == "unknown_option":
        return await c.post(url + "?colour=blue", files={"image": ("p.jpg", photo, "image/jpeg")})
    if kind == "bad_max_faces":
        return await c.post(url + "?max_faces=1.9", files={"image": ("p.jpg", photo, "image/jpeg")})
    if kind == "empty":
        return await c.post(url, files={"image": ("e.jpg", b"", "image/jpeg")})
    return await c.post(url, content=photo, headers={"Content-Type": "image/jpeg"})


async def _client(url: str, photos: list[bytes], refs: list, stop: float, k: int, bad: float, out: dict) -> None:
    import httpx

    rng = random.Random(k)
    async with httpx.AsyncClient(timeout=120) as c:
        i = k
        while time.perf_counter() < stop:
            j = i % len(photos)
            i += 7
            try:
                if rng.random() < bad:
                    kind = rng.choice(BAD_KINDS)
                    r = await _bad(c, url, kind, photos[j])
                    if 400 <= r.status_code < 500 and "error" in r.json():
                        out["bad_refused"] += 1
                    elif r.status_code == 503:
                        out["shed"] += 1
                    else:
                        out["unexpected"].append((kind, r.status_code))
                    continue
                r = await c.post(url, files={"image": ("p.jpg", photos[j], "image/jpeg")})
            except httpx.HTTPError as e:
                out["unexpected"].append(("connection", type(e).__name__))
                continue
            if r.status_code == 200:
                out["good_ok"] += 1
                if not _same(_faces(r.json()), refs[j]):
                    out["wrong"] += 1
            elif r.status_code in (503, 504):
                out["shed" if r.status_code == 503 else "deadline"] += 1
                await asyncio.sleep(0.05)
            else:
                out["unexpected"].append(("good", r.status_code))


def mixed_load(photos: list[bytes], a: argparse.Namespace) -> dict:
    import httpx

    proc, base = _start([])
    try:
        url = base + "/v1/analyze"
        refs = [_faces(httpx.post(url, files={"image": ("p.jpg", p, "image/jpeg")}, timeout=60).json()) for p in photos]
        out: dict = {"good_ok": 0, "bad_refused": 0, "wrong": 0, "shed": 0, "deadline": 0, "unexpected": []}
        stop = time.perf_counter() + a.seconds

        async def main() -> None:
            await asyncio.gather(*(_client(url, photos, refs, stop, k, a.bad, out) for k in range(a.clients)))

        t0 = time.perf_counter()
        asyncio.run(main())
        secs = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(20)
    return {
        "clients": a.clients,
        "seconds": round(secs, 1),
        "malformed share": a.bad,
        "good answered 200": out["good_ok"],
        "malformed answered 4xx": out["bad_refused"],
        "wrong answers": out["wrong"],
        "503 shed": out["shed"],
        "504 deadline": out["deadline"],
        "other 5xx or failures": len(out["unexpected"]),
        "examples of those": json.dumps(out["unexpected"][:5]),
    }


def abandoned_work(group: list[bytes], small: bytes) -> dict:
    import httpx
    import psutil

    proc, base = _start(["--timeout", "0.3", "--no-microbatch"])
    try:
        url = base + "/v1/analyze"
        ps = psutil.Process(proc.pid)
        httpx.post(url, files={"image": ("s.jpg", small, "image/jpeg")}, timeout=60)  # warm up

        async def burst() -> list[int]:
            async with httpx.AsyncClient(timeout=120) as c:
                files = [("image", (f"g{i}.jpg", g, "image/jpeg")) for i, g in enumerate(group * 2)]
                rs = await asyncio.gather(*(c.post(url, files=files) for _ in range(12)))
                return [r.status_code for r in rs]

        cpu0 = sum(ps.cpu_times()[:2])
        t0 = time.perf_counter()
        codes = asyncio.run(burst())
        t_burst = time.perf_counter() - t0
        cpu_at_504 = sum(ps.cpu_times()[:2])
        t1 = time.perf_counter()
        while True:
            r = httpx.post(url, files={"image": ("s.jpg", small, "image/jpeg")}, timeout=60)
            if r.status_code == 200 or time.perf_counter() - t1 > 120:
                break
            time.sleep(0.05)
        wait = time.perf_counter() - t1
        time.sleep(1.0)
        cpu_after = sum(ps.cpu_times()[:2])
    finally:
        proc.terminate()
        proc.wait(20)
    return {
        "heavy requests": 12,
        "their answers": ",".join(str(c) for c in sorted(set(codes))),
        "burst s": round(t_burst, 2),
        "server CPU s during the burst": round(cpu_at_504 - cpu0, 2),
        "server CPU s after the last 504": round(cpu_after - cpu_at_504, 2),
        "s until a small request is answered 200": round(wait, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--bad", type=float, default=0.1)
    a = ap.parse_args()
    src = sorted((SHARED / "data" / "utkface" / "UTKFace").iterdir())[:100]
    photos = [p.read_bytes() for p in src]
    group = [p.read_bytes() for p in sorted((SHARED / "data" / "group-photos").iterdir())]
    load = mixed_load(photos, a)
    abandoned = abandoned_work(group, photos[0])
    cmd = f"python benchmarks/serve_faults.py --clients {a.clients} --seconds {a.seconds:g} --bad {a.bad:g}"
    md = (
        f"# Service under faults\n\n`{cmd}`: `faceattr serve` (the default model and detector) on loopback, "
        "the clients in another process on the same 2 cores.\n\n"
        "## Mixed load: good and malformed requests\n\n"
        + md_table([load], list(load))
        + "\n\nA wrong answer is a 200 whose faces differ from the answer the same photo got alone.\n\n"
        "## Work past its deadline\n\n" + md_table([abandoned], list(abandoned)) + "\n"
    )
    write("serve-faults", {"mixed_load": load, "abandoned_work": abandoned}, md, cmd)


if __name__ == "__main__":
    main()
