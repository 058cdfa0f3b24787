"""Atomic output writing: a file is either complete or absent, never half-written."""

from __future__ import annotations

import errno
import io
import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np



def _new_file_mode() -> int:
    """0666 minus the process umask: the mode ``open()`` gives a new file (mkstemp gives 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


# Read once at import: os.umask is process-wide, so probing it while threads create files would race.
NEW_FILE_MODE = _new_file_mode()

# Temporary files of writes in progress (set.add / discard are atomic under the GIL).
_IN_PROGRESS: set[str] = set()
# The PublishGate the current thread writes under, if any.
_THREAD = threading.local()


class WritesClosed(RuntimeError):
    """A write finished after its run was interrupted: its file was not put in place."""


class PublishGate:
    """Decides, per run, whether a finished write may still appear under its name.

    An interrupted run records the files it wrote, then leaves while worker threads may still be
    writing. A file renamed into place after that record would be on disk but unknown to the
    manifest (a rerun would redo it and miscount). :meth:`close` waits for any rename in progress
    and refuses every later one, so the files on disk are exactly those finished before it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.closed = False

    def close(self) -> None:
        with self._lock:
            self.closed = True

    @contextmanager
    def publishing(self):
        """Writes made by this thread inside the block go through this gate."""
        previous = getattr(_THREAD, "gate", None)
        _THREAD.gate = self
        try:
            yield self
        finally:
            _THREAD.gate = previous

    def publish(self, tmp: str, path: Path) -> None:
        with self._lock:
            if self.closed:
                raise WritesClosed(f"{path}: not written, the run was interrupted")
            os.replace(tmp, path)


def _publish(tmp: str, path: Path) -> None:
    gate = getattr(_THREAD, "gate", None)
    if gate is None:
        os.replace(tmp, path)
    else:
        gate.publish(tmp, path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync, and a rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        _raise_if_full(exc, path)
        raise
    _IN_PROGRESS.add(tmp)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            # Data on disk before the rename makes it visible: after a crash or power loss the name
            # points at the complete file or at the old one, never at an empty or partial one.
            os.fsync(handle.fileno())
        os.chmod(tmp, NEW_FILE_MODE)
        _publish(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            _raise_if_full(exc, path)
        raise
    finally:
        _IN_PROGRESS.discard(tmp)
    return path


def _raise_if_full(exc: OSError, path: Path) -> None:
    """A full filesystem is the run's problem, not this file's: say so in one line (exit 4)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        from segdeploy.core.errors import OutputSpaceError

        raise OutputSpaceError(path, "no space left on the device (nothing partial was kept)") from None


def remove_partial_files() -> None:
    """Delete the temporary files of writes still in progress (before a process exits abruptly)."""
    for tmp in list(_IN_PROGRESS):
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (the folder entry); not possible on every platform / filesystem."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


# PASCAL VOC colour map: class c gets bits of c spread over R, G, B from the most significant bit.
def encode_png(array: np.ndarray, palette: list[int] | None = None) -> bytes:
    """PNG bytes of an HxW (gray or palette indices), HxWx3 (RGB) or HxWx4 (RGBA) uint8 array."""
    from PIL import Image

    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"PNG writer expects uint8, got {array.dtype}")
    image = Image.fromarray(array)
    if palette is not None:
        if array.ndim != 2:
            raise ValueError("a palette PNG needs an HxW index array")
        image = image.convert("P") if image.mode != "P" else image
        image.putpalette(palette)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path: str | os.PathLike, array: np.ndarray, palette: list[int] | None = None) -> Path:
    return atomic_write_bytes(path, encode_png(array, palette))


def write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return atomic_write_bytes(path, buffer.getvalue())


def track_partial(path: str | os.PathLike) -> None:
    """Register a temporary file written elsewhere (a video encoder's), so that
    :func:`remove_partial_files` deletes it if the process must exit abruptly."""
    _IN_PROGRESS.add(str(path))


def untrack_partial(path: str | os.PathLike) -> None:
    _IN_PROGRESS.discard(str(path))
