"""Finding a dataset's files on disk: accepted suffixes, root checks, case-insensitive folders,
stem indexes and image/mask pairing, with error messages that say what was expected and found.

Every reader scans folders the same
way, and the scanning rules are easier to read and test without the Layout class around them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from segdeploy.core.errors import DatasetError

#: Suffixes accepted for input images (lower case). Kept in step with segdeploy.engine.images.
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: Suffixes accepted for ground-truth masks (lower case). GIF is Carvana's mask format.
MASK_SUFFIXES: tuple[str, ...] = (".png", ".gif", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")

#: How many names an error message lists before it only gives the count.
_SHOW = 5


def format_names(names: Sequence[str], show: int = _SHOW) -> str:
    """``'a, b, c'`` or ``'a, b, c, … (12 in all)'``: the first few names and the count."""
    names = list(names)
    head = ", ".join(names[:show])
    return head if len(names) <= show else f"{head}, … ({len(names)} in all)"


def describe_folder(path: Path, show: int = 12) -> str:
    """What a folder holds, for 'wrong root' messages: sub-folders (with /) first, then files."""
    try:
        entries = [e for e in os.scandir(path) if not e.name.startswith(".")]
    except OSError as exc:
        return f"(cannot list: {exc.strerror or exc})"
    if not entries:
        return "nothing (empty folder)"
    dirs = sorted(e.name + "/" for e in entries if e.is_dir())
    files = sorted(e.name for e in entries if not e.is_dir())
    listed = dirs + files
    text = ", ".join(listed[:show])
    if len(listed) > show:
        text += f", … ({len(dirs)} folders, {len(files)} files in all)"
    return text


def check_root(root: str | os.PathLike | None, layout_name: str) -> Path:
    """The root as a Path, or a DatasetError when it is missing or is not a folder."""
    if root is None:
        raise DatasetError(f"{layout_name}: no data root given (pass --data-root DIR)")
    path = Path(root).expanduser().absolute()
    if not path.exists():
        parent = path.parent
        hint = f"; {parent} holds: {describe_folder(parent)}" if parent.is_dir() else ""
        raise DatasetError(f"{layout_name}: data root {path} does not exist{hint}")
    if not path.is_dir():
        raise DatasetError(f"{layout_name}: data root {path} is a file, expected a folder")
    return path


def find_dir(base: Path, relative: str) -> Path | None:
    """``base/relative`` matching each component case-insensitively; None when absent.

    An exact-case match wins; otherwise the first (sorted) case-insensitive match.
    """
    current = base
    for part in Path(relative).parts:
        exact = current / part
        if exact.is_dir():
            current = exact
            continue
        try:
            matches = sorted(e.name for e in os.scandir(current) if e.is_dir() and e.name.lower() == part.lower())
        except OSError:
            return None
        if not matches:
            return None
        current = current / matches[0]
    return current


def index_files(
    folder: Path,
    suffixes: Sequence[str],
    *,
    strip_suffix: str = "",
    what: str = "file",
) -> dict[str, Path]:
    """Map stem → path for the files of ``folder`` whose suffix (any case) is in ``suffixes``.

    Hidden files are skipped. ``strip_suffix`` is removed from the end of a stem when present
    (Carvana's ``_mask``). Two files with the same stem (``a.jpg`` and ``a.png``) are ambiguous and
    raise DatasetError.
    """
    found: dict[str, Path] = {}
    clashes: dict[str, list[str]] = {}
    wanted = tuple(s.lower() for s in suffixes)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise DatasetError(f"cannot list {folder}: {exc.strerror or exc}") from exc
    for entry in entries:
        name = entry.name
        if name.startswith(".") or not entry.is_file():
            continue
        stem, suffix = os.path.splitext(name)
        if suffix.lower() not in wanted:
            continue
        if strip_suffix and stem.endswith(strip_suffix):
            stem = stem[: -len(strip_suffix)]
        if stem in found:
            clashes.setdefault(stem, [found[stem].name]).append(name)
            continue
        found[stem] = folder / name
    if clashes:
        examples = [" / ".join(v) for v in clashes.values()]
        raise DatasetError(
            f"{folder}: {len(clashes)} {what} name(s) are ambiguous (same stem, several files): "
            f"{format_names(examples)}. Keep one file per stem."
        )
    return found


@dataclass
class PairResult:
    """Images paired with masks by stem, and what could not be paired."""

    pairs: list[tuple[str, Path, Path | None]]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def pair_by_stem(
    images: Mapping[str, Path],
    masks: Mapping[str, Path],
    *,
    layout_name: str,
    image_dir: Path,
    mask_dir: Path,
    mask_hint: str = "<stem>.png",
    strict: bool = True,
    require_masks: bool = True,
) -> PairResult:
    """Pair image and mask files that share a stem, in sorted id order.

    Args:
        images, masks: stem → file, from :func:`index_files`.
        layout_name, image_dir, mask_dir, mask_hint: used in error messages only.
        strict: unmatched files raise DatasetError; when False they are skipped and listed in
            ``PairResult.skipped`` as (file name, reason).
        require_masks: when False an image without mask is kept with ``mask=None`` (prediction on
            an unlabelled set); masks without image are then still reported.

    Raises:
        DatasetError: nothing to pair, or (strict) images without mask / masks without image.
    """
    if not images:
        raise DatasetError(
            f"{layout_name}: no image files in {image_dir} (looked for {', '.join(IMAGE_SUFFIXES)}); "
            f"it holds: {describe_folder(image_dir)}"
        )
    no_mask = sorted(set(images) - set(masks))
    no_image = sorted(set(masks) - set(images))
    problems = []
    if no_mask and require_masks:
        problems.append(
            f"{len(no_mask)} of {len(images)} images have no mask in {mask_dir} (expected {mask_hint}): "
            + format_names([images[s].name for s in no_mask])
        )
    if no_image:
        problems.append(
            f"{len(no_image)} mask(s) have no image in {image_dir}: " + format_names([masks[s].name for s in no_image])
        )
    if problems and strict:
        if not set(images) & set(masks) and require_masks:
            problems.append(
                "no stem matches at all: are --images and --masks swapped, or do the mask names carry "
                "a prefix/suffix the layout does not expect?"
            )
        raise DatasetError(
            f"{layout_name}: unmatched files. "
            + "; ".join(problems)
            + ". Fix or remove these files, restrict the run with --split-file, or skip them with --skip-unmatched."
        )
    skipped: list[tuple[str, str]] = []
    if require_masks:
        skipped += [(images[s].name, f"no mask in {mask_dir}") for s in no_mask]
    skipped += [(masks[s].name, f"no image in {image_dir}") for s in no_image]
    pairs: list[tuple[str, Path, Path | None]] = []
    for stem in sorted(images):
        if stem in masks:
            pairs.append((stem, images[stem], masks[stem]))
        elif not require_masks:
            pairs.append((stem, images[stem], None))
    return PairResult(pairs, skipped)
