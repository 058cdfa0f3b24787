"""What a comparison judges: images (folders, paths, arrays, named arrays) or dataset samples, as
named inputs with a content id (the sha256 a stored reference matches them by)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from segdeploy.core.errors import UsageError
from segdeploy.verify.reference import image_id


@dataclass
class CompareInput:
    """One judged image: its report name, pixels, content id and ground truth (when known)."""

    name: str
    image: np.ndarray
    id: str
    gt: np.ndarray | None = None


def inputs_from_images(images, limit: int | None) -> list[CompareInput]:
    from segdeploy.engine.finder import find_images
    from segdeploy.engine.images import read_image

    if isinstance(images, (str, os.PathLike, np.ndarray)):
        images = [images]
    entries: list = []
    for entry in images:
        if isinstance(entry, np.ndarray) or _is_named_array(entry):
            entries.append(entry)
        else:
            found = [path for path, _ in find_images([entry])]
            if not found:
                raise UsageError(f"{entry}: no images found")
            entries.extend(found)
    out = []
    for index, entry in enumerate(entries[:limit] if limit else entries):
        if _is_named_array(entry):
            name, image = str(entry[0]), entry[1]
        elif isinstance(entry, np.ndarray):
            name, image = f"array{index}", entry
        else:
            name, image = str(entry), read_image(entry)
        out.append(CompareInput(name, image, image_id(image)))
    return out


def _is_named_array(entry) -> bool:
    """A (name, HxWx3 array) pair: an in-memory image that reports name its own way."""
    return isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], np.ndarray)


def inputs_from_samples(samples, limit: int | None) -> list[CompareInput]:
    out = []
    for sample in samples:
        if limit is not None and len(out) >= limit:
            break
        out.append(CompareInput(str(sample.id), sample.image, image_id(sample.image), getattr(sample, "mask", None)))
    return out


def dataset_samples(layout) -> Iterable[Any]:
    """Samples of a :class:`segdeploy.data.Layout` with decoded ``image`` and ground truth ``mask``
    (foreground 0/1 for gray / binary masks, class ids for semantic ones; None when absent)."""
    from types import SimpleNamespace

    for sample in layout:
        image, mask = layout.load(sample)
        if mask is not None and layout.mask_encoding in ("gray", "binary"):
            mask = layout.foreground(mask).astype(np.uint8)
        yield SimpleNamespace(id=sample.id, image=image, mask=mask)
