"""The HTTP service (``faceattr serve``): FastAPI on the one :class:`Predictor`, so a face gets the
same numbers over HTTP as from ``faceattr predict``.

- ``POST /v1/analyze``: images as multipart upload (any file fields) or as JSON ``{"images": [{"data": BASE64,
  "name": ...}, ...], <options>}``; options as query or form fields (or JSON keys): ``tasks``, ``max_faces``,
  ``detect``, ``tta_flip``, ``explain``. Per image, the JSON of ``faceattr predict``.
- ``GET /health``, ``GET /v1/model`` (tasks, classes, version, origin, licence, the model card's measured figures),
  ``/docs`` (OpenAPI), ``/`` (the web page, every asset served from the package).
- Limits answer JSON errors ``{"error": {"code", "message"}}``: body size and decoded pixels 413, not an image 415,
  broken or unusable image 422, too many images 413, unknown or bad option 422, disabled task 403, bad API key
  401, slow upload 408, processing past the deadline 504, and more requests in flight than allowed 503 at once
  (with ``Retry-After``) instead of an unbounded queue.
- Micro-batching: the faces of concurrent requests are gathered for ``batch_wait_ms`` (or until
  ``max_batch_faces``) and go through the network as one batch (:class:`MicroBatcher`).

Nothing in a request names a server path or URL: images arrive as bytes only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import copy
import io
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
from fastapi import Request  # at module level: FastAPI resolves the endpoints' annotations here
from fastapi.responses import Response

from faceattr.errors import UsageError, check
from faceattr.runtime.predictor import Predictor
from faceattr.runtime.results import Attribute, FaceResult, PhotoResult
from faceattr.vision.image import DEFAULT_MAX_PIXELS, MIN_SIDE, ImageError, load_image, square_resize

log = logging.getLogger(__name__)

OPTIONS = ("tasks", "max_faces", "detect", "tta_flip", "explain")


@dataclass(frozen=True)
class ServeSettings:
    """What a deployment decides; validated at construction."""

    max_upload_mb: float = 20.0
    max_pixels: int = min(DEFAULT_MAX_PIXELS, 40_000_000)
    max_images: int = 16
    max_faces: int = 100
    timeout_s: float = 30.0
    read_timeout_s: float = 15.0
    max_inflight: int = 32
    disabled_tasks: tuple[str, ...] = ()
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    microbatch: bool = True
    batch_wait_ms: float = 4.0
    max_batch_faces: int = 64
    explain: bool = True

    def __post_init__(self) -> None:
        check(self.max_upload_mb > 0, f"max_upload_mb must be positive, got {self.max_upload_mb}")
        check(self.max_pixels >= MIN_SIDE * MIN_SIDE, f"max_pixels too small: {self.max_pixels}")
        for name in ("max_images", "max_faces", "max_inflight", "max_batch_faces"):
            check(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        check(self.timeout_s > 0 and self.read_timeout_s > 0, "timeouts must be positive")
        check(0 <= self.batch_wait_ms <= 1000, f"batch_wait_ms must be in 0..1000, got {self.batch_wait_ms}")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


# ---- micro-batching -------------------------------------------------------------------------------------------
@dataclass
class _Job:
    chips: np.ndarray
    tta: bool
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class MicroBatcher:
    """One thread that runs the network on the faces of every request waiting, as one batch.

    A request's chips are queued; the thread takes the first waiting job, then gathers more for up to ``wait_ms``
    or until ``max_faces`` faces, runs them together (one call per TTA setting) and hands each job its rows.
    Thread-safe: ``submit`` may be called from any thread."""

    def __init__(self, predictor: Predictor, wait_ms: float = 4.0, max_faces: int = 64) -> None:
        self.predictor, self.wait_s, self.max_faces = predictor, wait_ms / 1000.0, max_faces
        self._q: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0
        self.faces = 0

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="faceattr-microbatch", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        with self._lock:
            if self._thread is not None:
                self._q.put(None)
                self._thread.join(timeout=10)
                self._thread = None

    def submit(self, chips: np.ndarray, tta: bool) -> concurrent.futures.Future:
        self.start()
        job = _Job(chips, tta)
        self._q.put(job)
        return job.future

    def _loop(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            jobs, n = [first], len(first.chips)
            deadline = time.monotonic() + self.wait_s
            stop = False
            while n < self.max_faces:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    nxt = self._q.get(timeout=left)
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                jobs.append(nxt)
                n += len(nxt.chips)
            for tta in (False, True):
                group = [j for j in jobs if j.tta == tta and j.future.set_running_or_notify_cancel()]
                if group:
                    self._run(group, tta)
            if stop:
                return

    def _run(self, jobs: list[_Job], tta: bool) -> None:
        try:
            attrs = self.predictor.predict_chips(np.concatenate([j.chips for j in jobs]), tta)
        except Exception as e:  # handed to every waiting request
            for j in jobs:
                j.future.set_exception(e)
            return
        self.batches += 1
        self.faces += len(attrs)
        i = 0
        for j in jobs:
            j.future.set_result(attrs[i : i + len(j.chips)])
            i += len(j.chips)


# ---- request parsing ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    tasks: tuple[str, ...]
    max_faces: int
    detect: bool
    tta_flip: bool
    explain: tuple[str, ...]


def _bool(name: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise ApiError(422, "bad_option", f"{name} must be true or false, got {v!r}")


def _names(name: str, v: Any) -> tuple[str, ...]:
    if isinstance(v, (list, tuple)):
        items = [str(x) for x in v]
    else:
        items = str(v).split(",")
    return tuple(x.strip() for x in items if x.strip())


def parse_options(raw: dict[str, Any], predictor: Predictor, settings: ServeSettings, explain_ok: bool) -> Options:
    unknown = sorted(set(raw) - set(OPTIONS))
    if unknown:
        raise ApiError(422, "unknown_option", f"unknown option(s) {unknown}; the options are {list(OPTIONS)}")
    all_tasks = [t.name for t in predictor.tasks]
    enabled = [t for t in all_tasks if t not in settings.disabled_tasks]
    tasks = _names("tasks", raw["tasks"]) if "tasks" in raw else tuple(enabled)
    for t in tasks:
        if t not in all_tasks:
            raise ApiError(422, "bad_option", f"unknown task {t!r}; this model has {all_tasks}")
        if t in settings.disabled_tasks:
            raise ApiError(403, "task_disabled", f"the task {t!r} is disabled on this server")
    if not tasks:
        raise ApiError(422, "bad_option", "tasks is empty")
    try:
        max_faces = int(raw.get("max_faces", settings.max_faces))
    except (TypeError, ValueError):
        raise ApiError(422, "bad_option", f"max_faces must be an integer, got {raw.get('max_faces')!r}") from None
    if not 1 <= max_faces <= settings.max_faces:
        raise ApiError(422, "bad_option", f"max_faces must be in 1..{settings.max_faces}, got {max_faces}")
    explain = _names("explain", raw["explain"]) if raw.get("explain") not in (None, "", False) else ()
    for t in explain:
        if t not in tasks:
            raise ApiError(422, "bad_option", f"explain={t!r} is not among the requested tasks {list(tasks)}")
    if explain and not explain_ok:
        raise ApiError(422, "explain_unavailable", "heat-maps need the torch runtime; this server runs without it")
    return Options(
        tasks,
        max_faces,
        _bool("detect", raw.get("detect", True)),
        _bool("tta_flip", raw.get("tta_flip", bool(predictor.tta_flip))),
        explain,
    )


def decode_base64(data: Any, i: int) -> bytes:
    if not isinstance(data, str) or not data:
        raise ApiError(422, "bad_image", f"images[{i}].data must be a non-empty base64 string")
    if data.startswith("data:"):
        data = data.split(",", 1)[-1]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "bad_base64", f"images[{i}].data is not valid base64") from None


def image_error(e: ImageError, name: str) -> ApiError:
    msg = str(e).replace("<bytes>", name, 1)
    if "exceeds the limit" in msg:
        return ApiError(413, "image_too_large", msg)
    if "not an image" in msg:
        return ApiError(415, "not_an_image", msg)
    return ApiError(422, "bad_image", msg)


# ---- the service ----------------------------------------------------------------------------------------------
class Service:
    """The request logic, apart from FastAPI's routing (also usable in-process)."""

    def __init__(self, predictor: Predictor, settings: ServeSettings) -> None:
        unknown = [t for t in settings.disabled_tasks if t not in [t.name for t in predictor.tasks]]
        if unknown:
            raise UsageError(f"disabled task(s) {unknown} not in this model's {[t.name for t in predictor.tasks]}")
        self.predictor, self.settings = predictor, settings
        self.batcher = (
            MicroBatcher(predictor, settings.batch_wait_ms, settings.max_batch_faces) if settings.microbatch else None
        )
        self._explain_model: Any = None
        self._explain_lock = threading.Lock()
        self.inflight = 0
        self.served = 0

    @property
    def can_explain(self) -> bool:
        """Grad-CAM needs the torch network: the backend's own, or the checkpoint behind an ONNX export."""
        if not self.settings.explain:
            return False
        if getattr(self.predictor.backend, "name", "") == "torch":
            return True
        import importlib.util

        return self.predictor.checkpoint is not None and importlib.util.find_spec("torch") is not None

    async def _attributes(self, chips: np.ndarray, tta: bool) -> list[dict[str, Attribute]]:
        if not len(chips):
            return []
        if self.batcher is not None:
            return await asyncio.wrap_future(self.batcher.submit(chips, tta))
        return await asyncio.to_thread(self.predictor.predict_chips, chips, tta)

    def _chips(self, rgb: np.ndarray, opt: Options) -> tuple[list[Any], np.ndarray, str]:
        if not opt.detect:
            return [None], square_resize(rgb, self.predictor.input_size)[None], ""
        faces, chips = self.predictor.faces_and_chips(rgb)
        msg = "" if faces else "no face found"
        if len(faces) > opt.max_faces:
            keep = sorted(sorted(range(len(faces)), key=lambda i: -faces[i].score)[: opt.max_faces])
            msg = f"{len(faces)} faces found; the {opt.max_faces} with the highest detection score are kept"
            faces, chips = [faces[i] for i in keep], chips[keep]
        return faces, chips, msg

    def _explain(self, chips: np.ndarray, tasks: tuple[str, ...]) -> list[dict[str, str]]:
        """Grad-CAM over each chip, as PNG data URLs; on a private copy of the network (its hooks must not see
        the other requests' batches)."""
        from PIL import Image

        from faceattr.evidence.explain import explain_chips, overlay

        with self._explain_lock:
            if self._explain_model is None:
                backend = self.predictor.backend
                model = getattr(backend, "model", None)  # the torch backend's network
                if model is not None:
                    self._explain_model = copy.deepcopy(model)
                else:
                    from faceattr.models.checkpoint import load_model

                    self._explain_model, _ = load_model(self.predictor.checkpoint)  # type: ignore[arg-type]
            maps = explain_chips(self._explain_model, self.predictor.meta, chips, list(tasks))
        out: list[dict[str, str]] = []
        for i, chip in enumerate(chips):
            d = {}
            for t in tasks:
                buf = io.BytesIO()
                Image.fromarray(overlay(chip, maps[t][i])).save(buf, format="PNG")
                d[t] = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
            out.append(d)
        return out

    async def analyze_one(self, data: bytes, name: str, opt: Options) -> dict[str, Any]:
        try:
            rgb = await asyncio.to_thread(load_image, data, self.settings.max_pixels)
        except ImageError as e:
            raise image_error(e, name) from None
        h, w = rgb.shape[:2]
        if min(h, w) < MIN_SIDE:
            raise ApiError(422, "image_too_small", f"{name}: {w}x{h} is too small to hold a face")
        faces, chips, msg = await asyncio.to_thread(self._chips, rgb, opt)
        attrs = await self._attributes(chips, opt.tta_flip)
        results = []
        for f, a in zip(faces, attrs):
            a = {t: a[t] for t in opt.tasks}
            results.append(FaceResult(a) if f is None else FaceResult(a, f.box, f.score, f.to_dict()["landmarks"]))
        out = PhotoResult(name, w, h, results, msg).to_dict()
        if opt.explain and len(chips):
            maps = await asyncio.to_thread(self._explain, chips, opt.explain)
            for face, m in zip(out["faces"], maps):
                face["explain"] = m
        return out

    async def analyze(self, images: list[tuple[str, bytes]], opt: Options) -> dict[str, Any]:
        if not images:
            raise ApiError(422, "no_image", "no image in the request (multipart file fields, or JSON images[])")
        if len(images) > self.settings.max_images:
            raise ApiError(
                413, "too_many_images", f"{len(images)} images in one request; the limit is {self.settings.max_images}"
            )
        for name, data in images:
            if not data:
                raise ApiError(422, "empty_image", f"{name}: empty file")
        results = await asyncio.gather(*(self.analyze_one(d, n, opt) for n, d in images))
        self.served += len(images)
        return {"model": self.model_name, "results": list(results)}

    @property
    def model_name(self) -> str:
        meta = self.predictor.meta
        return f"{meta.architecture.name} {meta.input_size} px ({getattr(self.predictor.backend, 'name', '')})"

    def model_card(self) -> dict[str, Any]:
        from faceattr import __version__

        meta = self.predictor.meta
        tasks = []
        for t in meta.tasks:
            d: dict[str, Any] = {"name": t.name, "kind": t.kind, "enabled": t.name not in self.settings.disabled_tasks}
            if t.kind == "nominal":
                d["classes"] = [str(c) for c in t.classes]
            else:
                d["levels"] = [str(x) for x in (t.levels[:1] + t.levels[-1:])] if t.is_numeric else list(t.levels)
                d["numeric"] = t.is_numeric
            tasks.append(d)
        calib = meta.calibration or {}
        return {
            "faceattr_version": __version__,
            "runtime": getattr(self.predictor.backend, "name", ""),
            # the default of /v1/analyze's tta_flip (the measured default path): true, false, or {task: threshold} where
            # only the faces uncertain for those tasks get their mirror image (faceattr.runtime.tta)
            "tta_flip": self.predictor.tta_flip,
            "architecture": meta.architecture.name,
            "input_size": meta.input_size,
            "tasks": tasks,
            "weights_origin": meta.weights_origin,
            "licence": (
                "faceattr code: see the project licence; the shipped weights are trained on UTKFace (non-commercial "
                "research only) and FairFace (CC BY 4.0), and are bound by UTKFace's terms"
            ),
            "test_metrics": {k: meta.extra[k] for k in ("test_metrics", "test_metrics_also") if k in meta.extra},
            "calibration": {
                "fitted_on": calib.get("fitted_on"),
                "temperature": calib.get("temperature"),
                "bias": calib.get("bias") or {},
                "interval_coverage": self.predictor.coverage,
            },
            "limits": {
                "max_upload_mb": self.settings.max_upload_mb,
                "max_pixels": self.settings.max_pixels,
                "max_images": self.settings.max_images,
                "max_faces": self.settings.max_faces,
                "timeout_s": self.settings.timeout_s,
            },
            "explain": self.can_explain,
            "microbatch": self.batcher is not None,
        }


class _BodyLimit:
    """ASGI middleware: refuse a body over ``limit`` bytes (by Content-Length at once, or while it streams)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        cl = headers.get(b"content-length")
        too_big = ApiError(413, "body_too_large", f"request body over {self.limit / 2**20:.0f} MB")
        if cl is not None and cl.isdigit() and int(cl) > self.limit:
            await _send_error(send, too_big)
            return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise too_big
            return msg

        await self.app(scope, limited, send)


async def _send_error(send: Any, e: ApiError) -> None:
    body = json.dumps({"error": {"code": e.code, "message": e.message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": e.status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(predictor: Predictor, settings: ServeSettings | None = None) -> Any:
    """The FastAPI application serving ``predictor``."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.datastructures import UploadFile

    from faceattr import __version__

    settings = settings or ServeSettings()
    svc = Service(predictor, settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        yield
        if svc.batcher is not None:
            svc.batcher.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="faceattr",
        version=__version__,
        description="Age (with an interval), gender and race of every face in a photo, with calibrated "
        "probabilities. Images are uploaded; nothing is read from the server's disk or the network.",
    )
    app.state.service = svc

    def err(e: ApiError) -> JSONResponse:
        return JSONResponse({"error": {"code": e.code, "message": e.message}}, e.status, headers=e.headers)

    @app.exception_handler(ApiError)
    async def _api_error(_r: Request, e: ApiError) -> JSONResponse:
        return err(e)

    @app.exception_handler(RequestValidationError)
    async def _validation(_r: Request, e: RequestValidationError) -> JSONResponse:
        return err(ApiError(422, "bad_request", str(e.errors())[:500]))

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
        )
    app.add_middleware(_BodyLimit, limit=int(settings.max_upload_mb * 2**20))

    def authorise(request: Request) -> None:
        if settings.api_key and request.headers.get("x-api-key") != settings.api_key:
            raise ApiError(401, "unauthorised", "missing or wrong X-API-Key header")

    async def read_request(request: Request) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        raw: dict[str, Any] = dict(request.query_params)
        images: list[tuple[str, bytes]] = []
        if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
            form = await request.form(max_files=settings.max_images + 1, max_fields=50)
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    images.append((value.filename or f"image {len(images)}", await value.read()))
                elif key in raw and raw[key] != value:
                    raise ApiError(422, "bad_option", f"{key} given twice with different values")
                else:
                    raw[key] = value
        elif ctype == "application/json":
            try:
                body = json.loads(await request.body())
            except (ValueError, UnicodeDecodeError):
                raise ApiError(422, "bad_json", "the body is not valid JSON") from None
            if not isinstance(body, dict):
                raise ApiError(422, "bad_json", 'the JSON body must be an object: {"images": [...], ...}')
            items = body.pop("images", None)
            if not isinstance(items, list):
                raise ApiError(422, "no_image", 'the JSON body needs "images": a list of {"data": base64, "name"}')
            if len(items) > settings.max_images:
                raise ApiError(413, "too_many_images", f"{len(items)} images; the limit is {settings.max_images}")
            for i, it in enumerate(items):
                it = it if isinstance(it, dict) else {"data": it}
                images.append((str(it.get("name") or f"image {i}"), decode_base64(it.get("data"), i)))
            raw.update(body)
        elif not ctype:
            raise ApiError(415, "unsupported_media_type", "no Content-Type: use multipart/form-data or JSON")
        else:
            raise ApiError(
                415, "unsupported_media_type", f"Content-Type {ctype} is not accepted: multipart/form-data or JSON"
            )
        return images, raw

    @app.post("/v1/analyze", summary="Analyse the faces of one or more images")
    async def analyze(request: Request) -> Response:
        authorise(request)
        if svc.inflight >= settings.max_inflight:
            raise ApiError(503, "overloaded", "too many requests in flight; retry shortly", {"Retry-After": "1"})
        svc.inflight += 1
        try:
            try:
                images, raw = await asyncio.wait_for(read_request(request), settings.read_timeout_s)
            except TimeoutError:
                raise ApiError(408, "upload_timeout", f"the upload took over {settings.read_timeout_s:g} s") from None
            opt = parse_options(raw, predictor, settings, svc.can_explain)
            try:
                result = await asyncio.wait_for(svc.analyze(images, opt), settings.timeout_s)
            except TimeoutError:
                raise ApiError(504, "timeout", f"processing took over {settings.timeout_s:g} s") from None
            return JSONResponse(result)
        finally:
            svc.inflight -= 1

    @app.get("/health", summary="Liveness and load")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "inflight": svc.inflight, "images_served": svc.served}

    @app.get("/v1/model", summary="The model: tasks, classes, origin, licence, measured figures")
    async def model(request: Request) -> dict[str, Any]:
        authorise(request)
        return svc.model_card()

    web = resources.files("faceattr.serve") / "web"

    def asset(name: str, media: str) -> Response:
        return Response((web / name).read_bytes(), media_type=media, headers={"Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return HTMLResponse((web / "index.html").read_text(encoding="utf-8"))

    @app.get("/static/app.js", include_in_schema=False)
    async def app_js() -> Response:
        return asset("app.js", "text/javascript")

    @app.get("/static/style.css", include_in_schema=False)
    async def style() -> Response:
        return asset("style.css", "text/css")

    return app


def serve(predictor: Predictor, settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the service with uvicorn until interrupted (one process: the network uses the cores itself, and
    micro-batching gathers the requests of one process)."""
    import uvicorn

    uvicorn.run(create_app(predictor, settings), host=host, port=port, log_level="info")
