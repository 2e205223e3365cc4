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
import contextlib
import json
import logging
from importlib import resources
from typing import Any

from fastapi import Request  # at module level: FastAPI resolves the endpoints' annotations here
from fastapi.responses import Response

from faceattr.runtime.predictor import Predictor
from faceattr.serve.errors import ApiError
from faceattr.serve.options import decode_base64, parse_options
from faceattr.serve.service import Service
from faceattr.serve.settings import ServeSettings

log = logging.getLogger(__name__)


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


_ERROR: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["code", "message"],
        }
    },
}
_OPTIONS_SCHEMA: dict[str, dict[str, Any]] = {
    "tasks": {"type": "string", "description": "comma-separated tasks to return (default: all enabled)"},
    "max_faces": {"type": "integer", "minimum": 0, "description": "keep at most this many faces per image"},
    "detect": {"type": "boolean", "description": "false: the images are face crops (no detection)"},
    "tta_flip": {"type": "boolean", "description": "also read each face mirrored (default: the model's default)"},
    "explain": {"type": "string", "description": "a task: add a Grad-CAM heat-map per face (PNG data URL)"},
}
ANALYZE_OPENAPI: dict[str, Any] = {
    "parameters": [
        {"name": k, "in": "query", "required": False, "schema": v, "description": v["description"]}
        for k, v in _OPTIONS_SCHEMA.items()
    ],
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "one or more image files",
                        },
                        **_OPTIONS_SCHEMA,
                    },
                    "required": ["image"],
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "images": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "data": {"type": "string", "format": "byte", "description": "base64"},
                                    "name": {"type": "string"},
                                },
                                "required": ["data"],
                            },
                        },
                        **_OPTIONS_SCHEMA,
                    },
                    "required": ["images"],
                }
            },
        },
    },
}
_ATTRIBUTE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {"type": "string"},
        "value": {"type": "number", "description": "ordinal tasks: the expected value (age in years)"},
        "interval": {"type": "array", "items": {"type": "number"}, "description": "80 % interval [low, high]"},
        "probabilities": {"type": "object", "additionalProperties": {"type": "number"}},
    },
}
_PHOTO: dict[str, Any] = {
    "type": "object",
    "properties": {
        "file": {"type": "string"},
        "width": {"type": "integer"},
        "height": {"type": "integer"},
        "num_faces": {"type": "integer"},
        "message": {"type": "string"},
        "error": {"type": "string"},
        "faces": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "box": {"type": "array", "items": {"type": "number"}, "description": "[x0, y0, x1, y1] pixels"},
                    "score": {"type": "number"},
                    "landmarks": {"type": "object"},
                },
                "additionalProperties": _ATTRIBUTE,
            },
        },
    },
}
ANALYZE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "one result per image, in order",
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": {"results": {"type": "array", "items": _PHOTO}}}
            }
        },
    },
    **{
        code: {"description": what, "content": {"application/json": {"schema": _ERROR}}}
        for code, what in (
            (401, "missing or wrong X-API-Key"),
            (403, "a task disabled by the deployment"),
            (408, "the upload was too slow"),
            (413, "body, image or image count over the limit"),
            (415, "not an image, or an unsupported Content-Type"),
            (422, "a broken image or a bad option"),
            (503, "too many requests in flight: retry (Retry-After)"),
            (504, "processing took longer than the deadline"),
        )
    },
}


def check_multipart_complete(content_type: str, body: bytes) -> None:
    """A multipart body must end with its closing boundary: a body cut inside a part would otherwise lose that
    part (and its image) in silence."""
    boundary = ""
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        raise ApiError(422, "bad_multipart", "multipart/form-data without a boundary")
    if not body.rstrip(b"\r\n").endswith(b"--" + boundary.encode("latin-1") + b"--"):
        raise ApiError(422, "bad_multipart", "the multipart body is cut short (no closing boundary): resend it")


def create_app(predictor: Predictor, settings: ServeSettings | None = None) -> Any:
    """The FastAPI application serving ``predictor``."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from fastapi_offline import FastAPIOffline
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from faceattr import __version__

    settings = settings or ServeSettings()
    svc = Service(predictor, settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        yield
        svc.close()

    # /docs (Swagger UI) and /redoc from assets inside the fastapi-offline package: no CDN
    app = FastAPIOffline(
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

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_r: Request, e: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large", 400: "bad_request"}
        message = {404: "no such endpoint (see /docs)", 405: "method not allowed here (see /docs)"}.get(
            e.status_code, str(e.detail)
        )
        return err(ApiError(e.status_code, codes.get(e.status_code, "http_error"), message, dict(e.headers or {})))

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
            if ctype == "multipart/form-data":
                check_multipart_complete(request.headers.get("content-type", ""), await request.body())
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
            except RecursionError:  # a JSON body nested thousands deep
                raise ApiError(422, "bad_json", "the JSON body is nested too deeply") from None
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

    @app.post(
        "/v1/analyze",
        summary="Analyse the faces of one or more images",
        openapi_extra=ANALYZE_OPENAPI,
        responses=ANALYZE_RESPONSES,
    )
    async def analyze(request: Request) -> Response:
        authorise(request)
        if svc.inflight >= settings.max_inflight:
            raise ApiError(503, "overloaded", "too many requests in flight; retry shortly", {"Retry-After": "1"})
        work = svc.begin()
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
            svc.end(work)

    @app.get("/health", summary="Liveness and load")
    @app.head("/health", include_in_schema=False)
    async def health() -> dict[str, Any]:
        return {"status": "ok", "inflight": svc.inflight, "images_served": svc.served}

    @app.get("/v1/model", summary="The model: tasks, classes, licence, training data, figures")
    @app.head("/v1/model", include_in_schema=False)
    async def model(request: Request) -> dict[str, Any]:
        authorise(request)
        return svc.model_card()

    allowed = {"/v1/analyze": "POST, OPTIONS", "/v1/model": "GET, HEAD, OPTIONS", "/health": "GET, HEAD, OPTIONS"}

    def options_for(path: str) -> None:
        async def options() -> Response:
            """What the route accepts (``Allow``); a CORS preflight is answered by the CORS middleware first."""
            return Response(status_code=204, headers={"Allow": allowed[path]})

        app.add_api_route(path, options, methods=["OPTIONS"], include_in_schema=False)

    for path in allowed:
        options_for(path)

    web = resources.files("faceattr.serve") / "web"

    def asset(name: str, media: str) -> Response:
        return Response((web / name).read_bytes(), media_type=media, headers={"Cache-Control": "no-cache"})

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page() -> Response:
        return HTMLResponse((web / "index.html").read_text(encoding="utf-8"))

    @app.get("/static/app.js", include_in_schema=False)
    async def app_js() -> Response:
        return asset("app.js", "text/javascript")

    @app.get("/static/style.css", include_in_schema=False)
    async def style() -> Response:
        return asset("style.css", "text/css")

    return app
