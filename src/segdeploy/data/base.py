"""The dataset protocol every reader implements: :class:`Sample` records and the :class:`Layout` base.

A *layout* knows how one public dataset is laid out on disk. ``Layout.from_root(root, **opts)``
scans the folders once, pairs every image with its ground truth, and raises
:class:`DatasetError` with an actionable message (which folders were expected, what was found,
which files have no partner) when the root does not match. Iterating a layout yields
:class:`Sample` records (paths only); ``layout.load(sample)`` decodes one image and its mask.

The helpers the readers share live beside it, one job each: :mod:`segdeploy.data.scanning` (find
and pair files), :mod:`segdeploy.data.id_lists` (``--split-file``), :mod:`segdeploy.data.decoding`
(images and masks).

Only numpy is imported at module level; Pillow and OpenCV are imported when a file is read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from segdeploy.core.errors import DatasetError  # defined in core (the CLI maps it to an exit code), raised here
from segdeploy.data.decoding import read_rgb
from segdeploy.data.id_lists import read_id_list, select_ids
from segdeploy.data.scanning import check_root


@dataclass(frozen=True)
class Sample:
    """One image of a dataset and the file(s) holding its ground truth.

    Attributes:
        id: the image's identifier, unique within the layout (file stem, or DSB2018 folder name).
        image_path: the input image.
        mask_paths: ground-truth files: one for most datasets, every instance mask for raw DSB2018,
            one per class folder for the prepared DSB2018 layout; empty when the image has none.
    """

    id: str
    image_path: Path
    mask_paths: tuple[Path, ...] = ()

    @property
    def mask_path(self) -> Path | None:
        """The single ground-truth file, or None when there is none or more than one."""
        return self.mask_paths[0] if len(self.mask_paths) == 1 else None


def as_bool(value: Any) -> bool:
    """``True``/``False`` from a bool or a command-line string (1/0, true/false, yes/no, on/off)."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise DatasetError(f"expected a yes/no value, got {value!r}")
    return bool(value)


class Layout:
    """A scanned dataset: an ordered list of samples plus how to decode them.

    Subclasses set the class attributes, implement :meth:`_scan` (find and pair files, raise
    DatasetError on a broken root) and :meth:`load_mask`.

    Class attributes:
        name: registry name (``ecssd``, ``carvana``, ...).
        title: human-readable dataset name for messages.
        description: one line for ``list_layouts`` / ``--help``.
        task: ``saliency`` | ``binary`` | ``semantic``.
        mask_encoding: what :meth:`load_mask` returns: ``gray`` (uint8 0..255, foreground =
            ``mask > gt_threshold``), ``binary`` (uint8 0/1) or ``classes`` (uint8 class ids,
            ``ignore_index`` = don't care).
        gt_threshold: for ``gray`` masks, foreground is ``mask > gt_threshold``.
        num_classes: 1 for saliency/binary; the class count for semantic sets.
        ignore_index: label value excluded from scoring (VOC: 255), else None.
        options: layout-specific keyword options of :meth:`from_root` → help text.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    task: ClassVar[str] = "saliency"
    mask_encoding: ClassVar[str] = "gray"
    gt_threshold: ClassVar[float | None] = None
    num_classes: ClassVar[int] = 1
    ignore_index: ClassVar[int | None] = None
    options: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        root: Path,
        samples: Sequence[Sample],
        *,
        info: Mapping[str, Any] | None = None,
        skipped: Sequence[tuple[str, str]] = (),
    ):
        self.root = Path(root)
        self.samples: list[Sample] = list(samples)
        self.info: dict[str, Any] = dict(info or {})
        self.skipped: list[tuple[str, str]] = list(skipped)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_root(
        cls,
        root: str | os.PathLike | None,
        *,
        split_file: str | os.PathLike | None = None,
        limit: int | None = None,
        strict: bool = True,
        require_masks: bool = True,
        **opts: Any,
    ) -> Layout:
        """Scan ``root`` and return the layout with its samples.

        Args:
            root: the dataset folder (see each layout's docstring for what it may point at).
            split_file: a text file of ids (see :func:`read_id_list`); only those samples are kept,
                in the file's order. Overrides any ``split`` option.
            limit: keep only the first ``limit`` samples (after splitting).
            strict: unmatched images/masks raise DatasetError; False skips them and records them in
                ``layout.skipped``.
            require_masks: False accepts images without ground truth (``load`` then returns None).
            **opts: layout-specific options, listed in ``cls.options``.

        Raises:
            DatasetError: broken root, unmatched files, bad option or bad id list.
        """
        unknown = sorted(set(opts) - set(cls.options))
        if unknown:
            valid = ", ".join(sorted(cls.options)) or "none"
            raise DatasetError(f"{cls.name}: unknown option(s) {', '.join(unknown)}; valid options: {valid}")
        # Options may arrive as strings from `--option KEY=VALUE`.
        strict, require_masks = as_bool(strict), as_bool(require_masks)
        if isinstance(limit, str) and limit.strip().isdigit():
            limit = int(limit)
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise DatasetError(f"{cls.name}: limit must be a positive integer, got {limit!r}")
        ids = read_id_list(split_file) if split_file is not None else None
        layout = cls._scan(check_root(root, cls.name), ids=ids, strict=strict, require_masks=require_masks, **opts)
        if ids is not None:
            layout.samples = select_ids(layout.samples, ids, source=str(split_file), layout_name=cls.name)
            layout.info["split"] = f"ids from {split_file}"
        if not layout.samples:
            raise DatasetError(f"{cls.name}: no samples under {layout.root} for {layout.info.get('split', 'this split')}")
        layout.info["total"] = len(layout.samples)
        if limit is not None:
            layout.samples = layout.samples[:limit]
            layout.info["limit"] = limit
        return layout

    @classmethod
    def _scan(
        cls, root: Path, *, ids: Sequence[str] | None, strict: bool, require_masks: bool, **opts: Any
    ) -> Layout:
        """Find and pair the files under ``root``. ``ids`` is the split file's list, if any
        (layouts whose own split needs it may use it; the base class applies it afterwards)."""
        raise NotImplementedError

    # ----------------------------------------------------------------- access
    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    def iter(self, limit: int | None = None) -> Iterator[Sample]:
        """Iterate the samples, stopping after ``limit`` of them when given."""
        return iter(self.samples if limit is None else self.samples[:limit])

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.samples]

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for evaluation records: what was read and how it was split."""
        out: dict[str, Any] = {
            "layout": self.name,
            "dataset": self.title,
            "root": str(self.root),
            "task": self.task,
            "mask_encoding": self.mask_encoding,
            "num_samples": len(self.samples),
        }
        if self.gt_threshold is not None:
            out["gt_foreground"] = f"mask > {self.gt_threshold:g}"
        if self.ignore_index is not None:
            out["ignore_index"] = self.ignore_index
        out.update(self.info)
        if self.skipped:
            out["skipped"] = [{"file": f, "reason": r} for f, r in self.skipped]
        return out

    # ----------------------------------------------------------------- decoding
    def load_image(self, sample: Sample) -> np.ndarray:
        """The input image as HxWx3 uint8 RGB (segdeploy.engine.images.read_image)."""
        return read_rgb(sample.image_path)

    def load_mask(self, sample: Sample) -> np.ndarray | None:
        """The ground truth as described by ``mask_encoding``; None when the sample has none."""
        raise NotImplementedError

    def load(self, sample: Sample) -> tuple[np.ndarray, np.ndarray | None]:
        """``(image HxWx3 uint8 RGB, mask HxW or None)``; the sizes are checked to agree.

        Raises:
            segdeploy.engine.images.ImageReadError: the image file cannot be decoded.
            DatasetError: the mask cannot be decoded, or its size differs from the image's.
        """
        image = self.load_image(sample)
        mask = self.load_mask(sample)
        if mask is not None and mask.shape[:2] != image.shape[:2]:
            raise DatasetError(
                f"{self.name}: image {sample.image_path} is {image.shape[1]}x{image.shape[0]} (WxH) but its mask "
                f"{sample.mask_paths[0]} is {mask.shape[1]}x{mask.shape[0]}"
            )
        return image, mask

    def foreground(self, mask: np.ndarray) -> np.ndarray:
        """Boolean foreground of a ``gray`` or ``binary`` mask, by this layout's rule."""
        if self.mask_encoding == "gray":
            return mask > self.gt_threshold
        if self.mask_encoding == "binary":
            return mask > 0
        raise TypeError(f"{self.name}: class-id masks have no single foreground")
