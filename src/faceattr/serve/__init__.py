"""The HTTP service: settings, error answers, micro-batching, routes and the web page (``web/``).

Built on FastAPI; depends on evidence (Grad-CAM), the runtime and everything below.
"""

from faceattr.serve.app import MicroBatcher, ServeSettings, Service, create_app

__all__ = ["MicroBatcher", "ServeSettings", "Service", "create_app"]
