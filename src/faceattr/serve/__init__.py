"""The HTTP service: settings, error answers, micro-batching, routes and the web page (``web/``).

Built on FastAPI; depends on evidence (Grad-CAM), the runtime and everything below.
"""

from faceattr.serve.app import create_app
from faceattr.serve.batcher import MicroBatcher
from faceattr.serve.service import Service
from faceattr.serve.settings import ServeSettings

__all__ = ["MicroBatcher", "ServeSettings", "Service", "create_app"]
