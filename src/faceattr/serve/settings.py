"""The service's settings: limits, timeouts, micro-batching, tasks a deployment disables."""

from __future__ import annotations

from dataclasses import dataclass

from faceattr.errors import check
from faceattr.vision.image import DEFAULT_MAX_PIXELS, MIN_SIDE

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
    header_timeout_s: float = 10.0  # a connection whose request headers have not arrived by then is closed
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
        check(self.timeout_s > 0 and self.read_timeout_s > 0 and self.header_timeout_s > 0, "timeouts must be positive")
        check(0 <= self.batch_wait_ms <= 1000, f"batch_wait_ms must be in 0..1000, got {self.batch_wait_ms}")
