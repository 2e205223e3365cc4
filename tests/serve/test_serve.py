"""The HTTP service: the same numbers as ``faceattr predict``, micro-batching, limits and every documented bad request
(each answered with its 4xx while the server keeps serving)."""

from __future__ import annotations

import base64
import io
import json
import socket
import textwrap
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from faceattr.cli.predict import example_photo  # noqa: E402
from faceattr.runtime.policy import (
    default_runtime,
    default_tta_flip,  # noqa: E402
)
from faceattr.runtime.predictor import Predictor  # noqa: E402
from faceattr.serve import MicroBatcher, ServeSettings, create_app  # noqa: E402


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_pretrained(threads=2)


@pytest.fixture(scope="module")
def photo() -> bytes:
    return example_photo().read_bytes()


def client(predictor: Predictor, **kw: object) -> TestClient:
    return TestClient(create_app(predictor, ServeSettings(**kw)))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def api(predictor: Predictor):
    with client(predictor, max_images=4, max_pixels=4_000_000, max_upload_mb=2.0, disabled_tasks=("race",)) as c:
        yield c


def png(w: int, h: int, value: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (value, value, value)).save(buf, format="PNG")
    return buf.getvalue()


def png_bomb(side: int = 20_000) -> bytes:
    """A valid PNG of side x side black pixels (1-bit): a few KB that would decode to side^2 pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    row = b"\0" + b"\0" * ((side + 7) // 8)
    raw = zlib.compress(row * side, 9)
    ihdr = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def test_same_numbers_as_predict(predictor, photo):
    with client(predictor) as c:
        r = c.post("/v1/analyze", files={"image": ("astronaut.png", photo, "image/png")})
    assert r.status_code == 200, r.text
    got = r.json()["results"][0]
    want = predictor.predict(photo, source="astronaut.png").to_dict()
    assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)


def test_json_base64_and_options(api, photo):
    body = {"images": [{"data": base64.b64encode(photo).decode(), "name": "a.png"}], "tasks": ["age"]}
    r = api.post("/v1/analyze", json=body)
    assert r.status_code == 200, r.text
    face = r.json()["results"][0]["faces"][0]
    assert set(face) == {"box", "score", "landmarks", "age"}
    # race is disabled on this server: never returned by default
    r = api.post("/v1/analyze", files={"image": ("a.png", photo)})
    assert "race" not in r.json()["results"][0]["faces"][0] and "gender" in r.json()["results"][0]["faces"][0]
    # a face crop without detection, and several images in one multipart request
    r = api.post(
        "/v1/analyze?detect=false&tta_flip=true",
        files=[("image", ("a.png", photo)), ("image", ("b.png", photo))],
    )
    res = r.json()["results"]
    assert r.status_code == 200 and len(res) == 2 and "box" not in res[0]["faces"][0]


def test_explain_returns_a_heat_map(api, photo):
    r = api.post("/v1/analyze?explain=age&tasks=age,gender", files={"image": ("a.png", photo)})
    assert r.status_code == 200, r.text
    url = r.json()["results"][0]["faces"][0]["explain"]["age"]
    assert url.startswith("data:image/png;base64,")
    im = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert im.size == (128, 128)


def test_health_model_page_and_docs(api):
    assert api.get("/health").json()["status"] == "ok"
    m = api.get("/v1/model").json()
    assert [t["name"] for t in m["tasks"]] == ["age", "gender", "race"]
    assert [t["enabled"] for t in m["tasks"]] == [True, True, False]
    assert m["licence"] == "non-commercial research only" and m["commercial_use"] is False
    assert m["model"] == "faceattr-utkface-fairface-mobilenetv2" and any("UTKFace" in d for d in m["trained_on"])
    assert m["measured"]["UTKFace test"]["age_mae"] < 5 and m["tasks"][0]["range"] == [1.0, 116.0]
    assert "runs/" not in str(m) and "../shared" not in str(m)  # no server paths
    assert m["calibration"]["temperature"]["gender"] > 0
    default = "onnxruntime-int8" if default_runtime() == "onnx-int8" else "onnxruntime"  # float32 without VNNI
    assert m["tta_flip"] == default_tta_flip(default_runtime())  # true; {"gender": 0.8} on the float32 fallback
    assert m["runtime"] == default  # the shipped model's default path on this CPU
    page = api.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert api.get("/static/app.js").status_code == 200 and api.get("/static/style.css").status_code == 200
    assert "/v1/analyze" in api.get("/openapi.json").json()["paths"]
    assert api.get("/docs").status_code == 200


BAD = {
    "wrong content type": (
        dict(content=b"hello", headers={"content-type": "text/plain"}),
        415,
        "unsupported_media_type",
    ),
    "no content type": (dict(content=b"hello"), 415, "unsupported_media_type"),
    "not an image": (dict(files={"image": ("x.jpg", b"just text, not a jpeg")}), 415, "not_an_image"),
    "truncated image": (dict(files={"image": ("t.png", png(64, 64)[:60])}), 422, "bad_image"),
    "zero bytes": (dict(files={"image": ("z.png", b"")}), 422, "empty_image"),
    "1x1 image": (dict(files={"image": ("one.png", png(1, 1))}), 422, "image_too_small"),
    "huge dimensions": (dict(files={"image": ("huge.png", png(2100, 2000, 0))}), 413, "image_too_large"),
    "PNG decompression bomb": (dict(files={"image": ("bomb.png", png_bomb())}), 413, "image_too_large"),
    "body over the upload limit": (dict(files={"image": ("big.bin", b"\0" * (3 * 2**20))}), 413, "body_too_large"),
    "wrong base64": (dict(json={"images": [{"data": "%%% not base64 %%%"}]}), 422, "bad_base64"),
    "JSON without image": (dict(json={"tasks": "age"}), 422, "no_image"),
    "JSON that is not JSON": (
        dict(content=b"{not json", headers={"content-type": "application/json"}),
        422,
        "bad_json",
    ),
    "multipart without a file": (dict(data={"tasks": "age"}, files={}), 422, "no_image"),
    "too many images": (dict(files=[("image", (f"{i}.png", png(16, 16))) for i in range(5)]), 413, "too_many_images"),
    "100 images as JSON": (
        dict(json={"images": [base64.b64encode(png(16, 16)).decode()] * 100}),
        413,
        "too_many_images",
    ),
    "unknown option": (dict(params={"colour": "blue"}, files={"image": ("a.png", b"x")}), 422, "unknown_option"),
    "unknown task": (dict(params={"tasks": "mood"}, files={"image": ("a.png", b"x")}), 422, "bad_option"),
    "disabled task": (dict(params={"tasks": "age,race"}, files={"image": ("a.png", b"x")}), 403, "task_disabled"),
    "bad max_faces": (dict(params={"max_faces": "many"}, files={"image": ("a.png", b"x")}), 422, "bad_option"),
    "max_faces out of range": (dict(params={"max_faces": "0"}, files={"image": ("a.png", b"x")}), 422, "bad_option"),
    "bad boolean": (dict(params={"detect": "perhaps"}, files={"image": ("a.png", b"x")}), 422, "bad_option"),
    "explain a task not asked": (
        dict(params={"tasks": "age", "explain": "gender"}, files={"image": ("a.png", b"x")}),
        422,
        "bad_option",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_request_gets_its_4xx_and_the_server_goes_on(api, photo, case):
    kw, status, code = BAD[case]
    r = api.post("/v1/analyze", **kw)
    assert r.status_code == status, (case, r.status_code, r.text[:300])
    assert r.json()["error"]["code"] == code
    ok = api.post("/v1/analyze", files={"image": ("a.png", photo)})
    assert ok.status_code == 200 and ok.json()["results"][0]["num_faces"] == 1


def test_wrong_method_and_path(api):
    assert api.get("/v1/analyze").status_code == 405
    assert api.post("/v1/nothing").status_code == 404


def test_api_key(predictor, photo):
    with client(predictor, api_key="s3cret") as c:
        assert c.post("/v1/analyze", files={"image": ("a.png", photo)}).status_code == 401
        assert c.get("/v1/model", headers={"X-API-Key": "nope"}).status_code == 401
        r = c.post("/v1/analyze", files={"image": ("a.png", photo)}, headers={"X-API-Key": "s3cret"})
        assert r.status_code == 200
        assert c.get("/health").status_code == 200  # liveness needs no key


def test_timeout_gives_504(predictor, photo):
    with client(predictor, timeout_s=0.001) as c:
        r = c.post("/v1/analyze", files={"image": ("a.png", photo)})
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"


def test_overload_is_shed_with_503(predictor, photo, monkeypatch):
    app = create_app(predictor, ServeSettings(max_inflight=1))
    svc = app.state.service
    release = threading.Event()
    real = svc.predictor.faces_and_chips

    def slow(rgb):
        release.wait(10)
        return real(rgb)

    monkeypatch.setattr(svc.predictor, "faces_and_chips", slow)
    with TestClient(app) as c, ThreadPoolExecutor(1) as ex:
        first = ex.submit(c.post, "/v1/analyze", files={"image": ("a.png", photo)})
        deadline = time.time() + 10
        while svc.inflight == 0 and time.time() < deadline:
            time.sleep(0.01)
        t0 = time.perf_counter()
        r = c.post("/v1/analyze", files={"image": ("a.png", photo)})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert time.perf_counter() - t0 < 1.0  # answered at once, not queued
        release.set()
        assert first.result(20).status_code == 200


def test_microbatcher_batches_concurrent_requests_and_keeps_answers(predictor, rng):
    chips = [rng.integers(0, 256, (k, 128, 128, 3), dtype=np.uint8) for k in (1, 3, 2, 1, 4)]
    want = [predictor.predict_chips(c) for c in chips]
    mb = MicroBatcher(predictor, wait_ms=200, max_faces=64)
    try:
        futs = [mb.submit(c, predictor.tta_flip) for c in chips]
        got = [f.result(30) for f in futs]
    finally:
        mb.stop()
    assert mb.batches < len(chips)  # gathered
    for g, w in zip(got, want):
        assert len(g) == len(w)
        for a, b in zip(g, w):
            assert a["age"].value == pytest.approx(b["age"].value, abs=1e-3)
            assert a["gender"].probabilities == pytest.approx(b["gender"].probabilities, abs=1e-4)


def test_concurrent_requests_agree_with_sequential(predictor, photo):
    with client(predictor, batch_wait_ms=20) as c:
        seq = c.post("/v1/analyze", files={"image": ("a.png", photo)}).json()
        with ThreadPoolExecutor(8) as ex:
            outs = list(ex.map(lambda _: c.post("/v1/analyze", files={"image": ("a.png", photo)}).json(), range(8)))
    for o in outs:
        assert o["results"][0]["faces"][0]["age"]["value"] == pytest.approx(
            seq["results"][0]["faces"][0]["age"]["value"], abs=0.02
        )


def test_slow_upload_gets_408(predictor):
    import uvicorn

    app = create_app(predictor, ServeSettings(read_timeout_s=0.5))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(
                b"POST /v1/analyze HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 1000\r\n\r\n{"images": ['
            )
            reply = ""
            while "upload_timeout" not in reply:  # the status line and the body may come in separate packets
                part = conn.recv(4096).decode()
                if not part:
                    break
                reply += part
        assert reply.startswith("HTTP/1.1 408"), reply[:200]
        assert "upload_timeout" in reply
    finally:
        server.should_exit = True
        th.join(10)


def test_version_matches_pyproject():
    import tomllib
    from pathlib import Path

    import faceattr

    py = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert faceattr.__version__ == py["project"]["version"]


def test_docs_work_offline_and_describe_the_upload(api):
    import re

    for page in ("/docs", "/redoc"):
        html = api.get(page).text
        assert not re.findall(r"https?://(?!localhost|127\.0\.0\.1)[\w.-]+", html), page  # nothing from a CDN
        for asset in re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html):
            assert api.get(asset).status_code == 200, asset
    spec = api.get("/openapi.json").json()["paths"]["/v1/analyze"]["post"]
    body = spec["requestBody"]["content"]
    assert body["multipart/form-data"]["schema"]["properties"]["image"]["items"]["format"] == "binary"
    assert "images" in body["application/json"]["schema"]["properties"]
    assert {p["name"] for p in spec["parameters"]} >= {"tasks", "max_faces", "tta_flip"}
    assert "results" in spec["responses"]["200"]["content"]["application/json"]["schema"]["properties"]


def test_every_error_has_the_documented_shape_and_get_routes_answer_head(api):
    r = api.get("/no/such/route")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = api.delete("/health")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert api.head("/health").status_code == 200 and api.head("/v1/model").status_code == 200


def test_a_multipart_body_cut_inside_a_part_is_refused_not_shortened(api, photo):
    b = "faceattrboundary"

    def part(name: str) -> bytes:
        head = f'--{b}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
        return (head + "Content-Type: image/png\r\n\r\n").encode()

    whole = part("a.png") + photo + b"\r\n"
    cut = whole + part("b.png") + photo[:500]
    headers = {"Content-Type": f"multipart/form-data; boundary={b}"}
    r = api.post("/v1/analyze", content=cut, headers=headers)
    assert r.status_code == 422 and r.json()["error"]["code"] == "bad_multipart"
    ok = api.post("/v1/analyze", content=whole + f"--{b}--\r\n".encode(), headers=headers)
    assert ok.status_code == 200 and len(ok.json()["results"]) == 1


@pytest.mark.slow
def test_work_past_the_deadline_stops_and_stays_counted(predictor, photo, monkeypatch):
    """A 504 does not leave work behind that nobody counts: no stage starts after the deadline, and the request
    stays in flight (for --max-inflight and /health) until the stage that was running has ended."""
    app = create_app(predictor, ServeSettings(timeout_s=0.3, microbatch=False))
    svc = app.state.service
    calls = {"detect": 0, "estimate": 0}
    real_detect, real_estimate = svc.predictor.faces_and_chips, svc.predictor.predict_chips

    def slow_detect(rgb):
        calls["detect"] += 1
        time.sleep(1.0)
        return real_detect(rgb)

    def estimate(*a, **k):
        calls["estimate"] += 1
        return real_estimate(*a, **k)

    monkeypatch.setattr(svc.predictor, "faces_and_chips", slow_detect)
    monkeypatch.setattr(svc.predictor, "predict_chips", estimate)
    with TestClient(app) as c:
        r = c.post("/v1/analyze", files=[("image", ("a.png", photo)), ("image", ("b.png", photo))])
        assert r.status_code == 504
        assert c.get("/health").json()["inflight"] == 1  # detection still running: still counted
        deadline = time.time() + 10
        while c.get("/health").json()["inflight"] and time.time() < deadline:
            time.sleep(0.05)
        assert c.get("/health").json()["inflight"] == 0
        time.sleep(0.3)
    assert calls == {"detect": 2, "estimate": 0}  # the network never ran for the abandoned request


def test_json_nested_thousands_deep_is_a_422_not_a_500(api):
    body = "[" * 100_000 + "]" * 100_000
    r = api.post("/v1/analyze", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "bad_json"


def test_mime_wrapped_base64_is_base64(api, photo):
    wrapped = "\n".join(textwrap.wrap(base64.b64encode(photo).decode(), 76)) + "\n"  # what `base64 FILE` prints
    r = api.post("/v1/analyze", json={"images": [{"data": wrapped, "name": "a.png"}]})
    assert r.status_code == 200 and r.json()["results"][0]["num_faces"] == 1


@pytest.mark.parametrize("value", [True, 1.9, "2.5", "two", [1]])
def test_max_faces_is_a_whole_number_or_refused(api, photo, value):
    r = api.post("/v1/analyze", json={"images": [base64.b64encode(photo).decode()], "max_faces": value})
    assert r.status_code == 422 and "max_faces" in r.json()["error"]["message"]


def test_a_port_in_use_is_one_line(predictor, capsys):
    from faceattr.cli.main import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        rc = main(["-q", "serve", "--port", str(port)])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot listen" in err and len([ln for ln in err.splitlines() if "error" in ln]) == 1


def test_a_client_that_sends_half_its_headers_is_cut_off(predictor):
    """uvicorn alone would wait for the rest of the headers for ever; the service closes such a connection."""
    import uvicorn

    from faceattr.serve.server import header_timeout_protocol

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(predictor, ServeSettings())
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", http=header_timeout_protocol(1.0))
    server = uvicorn.Server(config)
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    try:
        deadline = time.time() + 20
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(b"POST /v1/analyze HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/")
            t0 = time.time()
            assert c.recv(100) == b""  # closed by the server
            assert time.time() - t0 < 5
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:  # a whole request is served
            c.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert c.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        server.should_exit = True
        th.join(10)


def test_options_says_what_each_route_accepts(api):
    r = api.options("/v1/analyze")
    assert r.status_code == 204 and r.headers["allow"] == "POST, OPTIONS"
    assert "HEAD" in api.options("/health").headers["allow"]
