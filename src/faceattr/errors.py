"""Which exceptions mean "the user can fix this" (the CLI prints them as one line, exit 2).

Every user-facing error subclasses :class:`faceattr.exceptions.FaceattrError`; missing files and permissions
(``FileNotFoundError``, ``PermissionError``) and a full disk count too. Nothing here imports torch.
"""

from __future__ import annotations

import errno

from faceattr.exceptions import FaceattrError

USER_ERRORS: tuple[type[BaseException], ...] = (FaceattrError, FileNotFoundError, PermissionError)


def is_user_error(e: BaseException) -> bool:
    return isinstance(e, USER_ERRORS) or (
        isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT)
    )
