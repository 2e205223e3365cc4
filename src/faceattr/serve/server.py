"""Running the service: the port check, the first log line, and uvicorn with a header-read timeout."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faceattr.errors import UsageError
from faceattr.runtime.predictor import Predictor
from faceattr.serve.app import create_app
from faceattr.serve.settings import ServeSettings

log = logging.getLogger(__name__)


def header_timeout_protocol(seconds: float) -> Any:
    """uvicorn's HTTP protocol (httptools' C parser where it is installed, else h11), closing a connection whose
    first request's headers have not all arrived within ``seconds`` (uvicorn itself waits for them for ever: a
    client that sends half its headers and goes silent would hold a connection). Idle connections between requests
    are uvicorn's keep-alive timeout's."""
    base: Any
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base

    class HeaderTimeoutProtocol(base):
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._faceattr_timer = asyncio.get_running_loop().call_later(seconds, self._faceattr_expire)

        def _faceattr_expire(self) -> None:
            if self.cycle is None and not self.transport.is_closing():
                log.info("closed a connection whose request headers did not arrive within %g s", seconds)
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self._faceattr_timer.cancel()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


def serve(predictor: Predictor, settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the service with uvicorn until interrupted (one process: the network uses the cores itself, and
    micro-batching gathers the requests of one process)."""
    import socket

    import uvicorn

    try:  # a port in use (or not ours to take) is the user's to fix: one line, before the app starts
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, port))
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    app = create_app(predictor, settings)
    card = app.state.service.model_card()
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    log.info(
        "faceattr serve: http://%s:%d/ (API docs at /docs) · model %s, licence: %s · runtime %s · limits: %s MB "
        "per request, %d images, %d s",
        shown,
        port,
        card["model"],
        card["licence"],
        card["runtime"],
        f"{settings.max_upload_mb:g}",
        settings.max_images,
        settings.timeout_s,
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        http=header_timeout_protocol(settings.header_timeout_s),
        timeout_keep_alive=5,
    )
