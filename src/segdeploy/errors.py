"""Which exceptions are the user's to fix (printed as one line) rather than bugs (traceback)."""

from __future__ import annotations


def is_user_error(exc: BaseException) -> bool:
    from .io.images import ImageReadError
    from .weights import WeightsError

    known: tuple[type, ...] = (WeightsError, ImageReadError, FileNotFoundError, KeyError, ValueError)
    try:
        from .runtimes import RuntimeUnavailable

        known += (RuntimeUnavailable,)
    except ImportError:
        pass
    try:
        from .data import DatasetError

        known += (DatasetError,)
    except ImportError:
        pass
    return isinstance(exc, known)
