"""Id lists (``--split-file``): reading a file of sample ids and selecting those samples.

The id-list format is its own small language (comments,
wseg-style pairs, suffixes stripped) and readers such as DSB2018 use it without a Layout.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from segdeploy.core.errors import DatasetError
from segdeploy.data.scanning import IMAGE_SUFFIXES, MASK_SUFFIXES, format_names



class _Identified(Protocol):
    id: str


#: a sample (:class:`segdeploy.data.base.Sample`): anything with an ``id``
SampleT = TypeVar("SampleT", bound=_Identified)


def read_id_list(path: str | os.PathLike) -> list[str]:
    """Read a list of sample ids, one per line, keeping the file's order.

    Accepted lines: ``id``, ``id.jpg``, ``some/folder/id.png``, or a wseg-style pair
    ``JPEGImages/id.jpg SegmentationClass/id.png`` (the first field is used). Blank lines and
    ``#`` comments are ignored; a known image/mask suffix is stripped; duplicates raise.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"id list {path} does not exist or is not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read id list {path}: {exc}") from exc
    ids: list[str] = []
    seen: dict[str, int] = {}
    duplicates: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name = line.split()[0].replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        stem, suffix = os.path.splitext(name)
        if suffix.lower() in IMAGE_SUFFIXES + MASK_SUFFIXES:
            name = stem
        if name in seen:
            duplicates.append(f"{name} (lines {seen[name]} and {number})")
            continue
        seen[name] = number
        ids.append(name)
    if duplicates:
        raise DatasetError(f"id list {path}: {len(duplicates)} duplicate id(s): {format_names(duplicates)}")
    if not ids:
        raise DatasetError(f"id list {path} holds no ids")
    return ids


def select_ids(samples: Sequence[SampleT], ids: Sequence[str], *, source: str, layout_name: str) -> list[SampleT]:
    """The samples named by ``ids``, in that order; unknown ids raise DatasetError."""
    by_id = {s.id: s for s in samples}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise DatasetError(
            f"{layout_name}: {len(unknown)} of {len(ids)} ids in {source} are not in the dataset "
            f"({len(samples)} samples found): {format_names(unknown)}. Check that the list belongs to this "
            "dataset and the data root is complete."
        )
    return [by_id[i] for i in ids]
