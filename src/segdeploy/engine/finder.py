"""Expand files, folders and glob patterns into the list of inputs, safely.

* Symbolic links are followed, but every folder is entered once (by its real path), so links to
  ``.`` or to a parent never make the search loop.
* Inside folders, an entry with an image suffix that is not a regular file (FIFO, dangling or
  looping symlink) is *kept*, so that reading it fails with a named reason and is counted as failed,
  exactly as when it is named on the command line. Files with other suffixes are ignored.
* Folders listed in ``exclude`` (the output tree) are never searched, so masks are not fed back in.
* The relative path of each input (used to mirror it under the output folder) is taken from one
  anchor: the input folder itself when a single folder or pattern is given, else the deepest folder
  that holds every input root; two inputs named ``x.jpg`` in two folders thus get two paths.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Iterable, Iterator

from segdeploy.core.errors import UsageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

#: Files a user may expect to be read from a folder but that are not: each is named with its reason
#: ("skipped x.gif: ..."), one line per file, instead of being passed over in silence.
NOT_READ_IN_FOLDERS = {
    ".gif": "GIF (often animated) is not read from folders; name the file on the command line for its first "
            "frame, or convert it to PNG",
    ".heic": "HEIC is not a format Pillow reads; convert it to JPEG or PNG",
    ".heif": "HEIF is not a format Pillow reads; convert it to JPEG or PNG",
    ".mp4": "a video: predict reads it with PyAV (pip install 'segdeploy[video]')",
    ".mov": "a video: predict reads it with PyAV (pip install 'segdeploy[video]')",
    ".avi": "a video: predict reads it with PyAV (pip install 'segdeploy[video]')",
    ".mkv": "a video: predict reads it with PyAV (pip install 'segdeploy[video]')",
    ".webm": "a video: predict reads it with PyAV (pip install 'segdeploy[video]')",
}
_MAGIC = set("*?[")


class InputNotFound(UsageError, FileNotFoundError):
    """An input that names no file, folder, link or matching pattern (exit 2)."""


def _real(path: str) -> str:
    return os.path.realpath(path)


def _inside(path: str, roots: list[str]) -> bool:
    real = _real(path)
    return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _is_dir(path: str) -> bool:
    try:
        return os.path.isdir(path)
    except OSError:
        return False


def _walk(folder: str, recursive: bool, excluded: list[str], visited: set[str],
          suffixes: tuple[str, ...] = IMAGE_SUFFIXES, skipped: list[str] | None = None) -> Iterator[str]:
    """Entries with one of ``suffixes`` under ``folder``, sorted, each real folder entered once; files
    a user may have meant as inputs (:data:`NOT_READ_IN_FOLDERS`) are named in ``skipped``."""
    real = _real(folder)
    if real in visited or _inside(folder, excluded):
        return
    visited.add(real)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if _is_dir(entry.path):
            if recursive:
                yield from _walk(entry.path, recursive, excluded, visited, suffixes, skipped)
        elif os.path.splitext(entry.name)[1].lower() in suffixes:
            yield entry.path
        elif skipped is not None and os.path.splitext(entry.name)[1].lower() in NOT_READ_IN_FOLDERS:
            skipped.append(f"skipped {entry.path}: {NOT_READ_IN_FOLDERS[os.path.splitext(entry.name)[1].lower()]}")


def _glob(pattern: str, recursive: bool, excluded: list[str]) -> tuple[str, list[str]]:
    """(base folder, matches) of a glob pattern; ``**`` spans folders only with ``recursive``.

    Hidden names match only a pattern part that starts with a dot, as in :mod:`glob`.
    """
    parts = Path(pattern).parts
    first = next(i for i, part in enumerate(parts) if _MAGIC & set(part))
    base = os.path.join(*parts[:first]) if first else "."
    found: list[str] = []
    seen_star: set[tuple[str, int]] = set()

    def match(folder: str, index: int) -> None:
        if index == len(parts) or _inside(folder, excluded):
            return
        part = parts[index]
        if part == "**" and recursive:
            key = (_real(folder), index)
            if key in seen_star:  # a link back to a folder already expanded: stop the loop here
                return
            seen_star.add(key)
            match(folder, index + 1)  # ** matches zero folders
            try:
                children = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                return
            for child in children:
                if not child.name.startswith(".") and _is_dir(child.path):
                    match(child.path, index)
            return
        part = "*" if part == "**" else part
        try:
            children = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for child in children:
            if child.name.startswith(".") and not part.startswith("."):
                continue
            if not fnmatch.fnmatchcase(child.name, part):
                continue
            if index == len(parts) - 1:
                if not _is_dir(child.path):
                    found.append(child.path)
            elif _is_dir(child.path):
                match(child.path, index + 1)

    match(base, first)
    return base, found


def find_images(inputs: Iterable, recursive: bool = False, *, exclude: Iterable = (),
                suffixes: tuple[str, ...] = IMAGE_SUFFIXES, skipped: list[str] | None = None) -> list[tuple[Path, Path]]:
    """Expand files, folders and glob patterns into (file, relative output path) pairs.

    Files named explicitly are kept whatever their suffix and whatever they are (a FIFO or a dangling
    link is reported by the reader, not dropped); files found inside folders or by patterns are kept
    when their suffix is an image suffix. Order is sorted per input; the same real file is kept once.

    Args:
        exclude: folders whose contents are never inputs (the output folder).
        suffixes: the suffixes kept inside folders (video suffixes are added for video runs).
        skipped: receives one line per file in a folder that looks like an input but is not read.
    Raises:
        InputNotFound: an input names nothing that exists.
    """
    excluded = [_real(str(p)) for p in exclude]
    groups: list[tuple[str, str, list[str]]] = []  # (kind, root, files)
    for item in inputs:
        text = str(item)
        if _is_dir(text):
            groups.append(("folder", text, list(_walk(text, recursive, excluded, set(), suffixes, skipped))))
        elif os.path.lexists(text):
            groups.append(("file", os.path.dirname(text) or ".", [text]))
        elif _MAGIC & set(text):
            base, matches = _glob(text, recursive, excluded)
            groups.append(("pattern", base, matches))
        else:
            raise InputNotFound(f"{text}: no such file, folder or matching pattern")

    if len(groups) == 1 and groups[0][0] != "file":
        anchor = os.path.abspath(groups[0][1])
    else:
        parents = [os.path.abspath(root) if kind == "file" else os.path.dirname(os.path.abspath(root))
                   for kind, root, _ in groups]
        anchor = os.path.commonpath(parents) if parents else os.getcwd()

    found: list[tuple[Path, Path]] = []
    seen: set[str] = set()
    for _, _, files in groups:
        for name in files:
            key = _real(name)
            if key in seen:
                continue
            seen.add(key)
            found.append((Path(name), Path(os.path.relpath(os.path.abspath(name), anchor))))
    return found
