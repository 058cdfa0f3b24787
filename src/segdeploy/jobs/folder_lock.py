"""One run owns an output folder at a time.

``OUT/.segdeploy-lock`` names the run that holds the folder: its pid, host, start time and the
settings that change its masks. The lock itself is an advisory ``flock`` on that file, which the
kernel drops when the process ends however it ends (SIGKILL, power loss of a network client), so a
lock file whose flock can be taken is stale by construction: its run is gone, and the next run
takes it over and says so.

A second run on a held folder:

* with other settings is refused (UsageError, exit 2) before anything is written: two runs with
  different seeds, weights or options would otherwise mix their masks in one folder under one
  manifest;
* with the same settings waits for the first to finish, then resumes from its manifest (the masks
  it wrote are skipped, not recomputed twice at once).

A run that ends removes the file (the folder then holds only masks and the manifest).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

from segdeploy.core.errors import UsageError

LOCK_NAME = ".segdeploy-lock"


def _flock(handle, blocking: bool) -> bool:
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False


def _read_owner(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="ascii") or "{}")
    except (OSError, ValueError):
        return {}


def _still_named(handle, path: Path) -> bool:
    """True when ``path`` still names the file ``handle`` has open (a finished run removes it)."""
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except OSError:
        return False


def _holds(handle) -> bool:
    """True when this handle holds the flock (taken on a file since removed)."""
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


class FolderLock:
    """The lock on one output folder, held from :meth:`acquire` until :meth:`release` (or exit)."""

    def __init__(self, out_dir: Path, handle, created_dir: bool) -> None:
        self.out_dir, self._handle, self._created_dir = out_dir, handle, created_dir

    @classmethod
    def acquire(cls, out_dir: str | os.PathLike, settings: dict[str, Any], *, poll_s: float = 0.5,
                say: Callable[[str], None] | None = None) -> "FolderLock":
        """Take the folder's lock for a run with ``settings``.

        Raises:
            UsageError: another live run holds the folder with other settings.
        """
        out_dir = Path(out_dir)
        say = say or (lambda text: None)
        created = not out_dir.exists()
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / LOCK_NAME
        handle = open(path, "a+", encoding="ascii")  # noqa: SIM115 - held for the whole run
        waited = False
        while not _flock(handle, blocking=False) or not _still_named(handle, path):
            if _holds(handle):  # locked a file its owner had already removed: open the current one
                handle.close()
                handle = open(path, "a+", encoding="ascii")  # noqa: SIM115
                continue
            owner = _read_owner(path)
            if owner.get("settings") != json.loads(json.dumps(settings, default=str)):
                handle.close()
                raise UsageError(
                    f"{out_dir} is being written by another segdeploy run (pid {owner.get('pid', '?')} on "
                    f"{owner.get('host', '?')}, since {owner.get('started', '?')}) with other settings; "
                    "wait for it to end, or choose another -o. Nothing was written.")
            if not waited:
                say(f"waiting for the run with the same settings that holds {out_dir} "
                    f"(pid {owner.get('pid', '?')}); this run resumes where it ends")
                waited = True
            time.sleep(poll_s)
        previous = _read_owner(path)
        if previous.get("pid") and previous.get("pid") != os.getpid() and not waited:
            if previous.get("host") == socket.gethostname() and not _pid_alive(previous["pid"]):
                say(f"note: taking over the lock of {out_dir} left by pid {previous['pid']}, which is no longer "
                    "running")
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "settings": settings}
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(record, sort_keys=True, default=str, ensure_ascii=True))
        handle.flush()
        return cls(out_dir, handle, created)

    def release(self, *, nothing_written: bool = False) -> None:
        """Give the folder up. With ``nothing_written`` (the run was refused before writing), a folder
        that this run created and that holds only the lock file is removed again."""
        if self._handle is None:
            return
        # Removed while still locked: a run waiting on this file sees it gone and opens the new one
        # (see acquire), so two runs never hold two files of the same name.
        try:
            (self.out_dir / LOCK_NAME).unlink()
        except OSError:
            pass
        if nothing_written and self._created_dir:
            try:
                self.out_dir.rmdir()  # only when empty
            except OSError:
                pass
        self._handle.close()  # drops the flock
        self._handle = None


__all__ = ["FolderLock", "LOCK_NAME"]
