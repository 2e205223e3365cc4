"""The one exception base for errors a user can fix (a bad option, file, model or dataset), and which exceptions
count as such.

It depends on nothing, so every module -- including the onnxruntime-only path -- can raise a subclass, and the
CLI turns any of them (and missing files, permissions, a full disk) into one line on standard error and exit
status 2 (``--debug`` shows the stack trace). Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno


class FaceattrError(Exception):
    """Base of every user-facing error."""


class UsageError(FaceattrError, ValueError):
    """An option or argument out of range or inconsistent with another."""


def check(cond: bool, message: str) -> None:
    """Raise :class:`UsageError` with ``message`` unless ``cond``."""
    if not cond:
        raise UsageError(message)


USER_ERRORS: tuple[type[BaseException], ...] = (FaceattrError, FileNotFoundError, PermissionError)


def is_user_error(e: BaseException) -> bool:
    return isinstance(e, USER_ERRORS) or (
        isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT)
    )
