"""The exceptions that mean "the user can fix this": the CLI prints them as one line, not a stack trace."""

from __future__ import annotations

from faceattr.checkpoint import CheckpointError
from faceattr.config import ConfigError
from faceattr.data.readers import DataError
from faceattr.image import ImageError
from faceattr.models.backbones import WeightsNotFoundError

USER_ERRORS: tuple[type[BaseException], ...] = (CheckpointError, ConfigError, DataError, ImageError,
                                                 WeightsNotFoundError, FileNotFoundError, PermissionError)


def _extend() -> tuple[type[BaseException], ...]:
    extra: list[type[BaseException]] = []
    from faceattr.detect import DetectorUnavailable
    from faceattr.predict import ModelFormatError
    from faceattr.train import TrainingError
    extra += [DetectorUnavailable, ModelFormatError, TrainingError]
    try:
        from faceattr.explain import ExplainError
        from faceattr.export import ExportError
        extra += [ExplainError, ExportError]
    except ImportError:  # explain needs matplotlib only when used; torch is always there for these
        pass
    return USER_ERRORS + tuple(extra)


USER_ERRORS = _extend()
