"""Salient-object-detection test sets (U²-Net): image folder + ground-truth folder, paired by stem.

Folder names as the datasets are distributed (the layout also accepts the root one or two levels
above them, any letter case, and the common re-packagings ``Imgs/ + GT/``, ``images/ + masks/``):

============ ================================================== ===========================================
layout       distributed as                                      notes
============ ================================================== ===========================================
ecssd        ``ECSSD/images/*.jpg`` + ``ground_truth_mask/*.png`` CUHK page; seed guide 000 uses this layout
duts-te      ``DUTS-TE/DUTS-TE-Image/*.jpg`` + ``DUTS-TE-Mask/*.png``
duts-tr      ``DUTS-TR/DUTS-TR-Image`` + ``DUTS-TR-Mask``          U²-Net's training set
msra-b       ``MSRA-B/*.jpg`` + ``*.png`` in one folder             or ``imgs/ + gt/``; the 2000-image test
                                                                   split is a list file (``--split-file``)
msra10k      ``MSRA10K_Imgs_GT/Imgs/*.jpg`` + ``*.png`` together    mmcheng.net/msra10k (seed guide 003's link)
hku-is       ``HKU-IS/imgs/*.png`` + ``gt/*.png``
pascal-s     ``datasets/imgs/pascal/*.jpg`` + ``datasets/masks/pascal/*.png``
                                                                   graded (non-binary) masks: fg = gt > 128
dut-omron    ``DUT-OMRON-image/*.jpg`` + ``pixelwiseGT-new-PNG/*.png``
pairs        any ``--images DIR`` + ``--masks DIR``
============ ================================================== ===========================================

Masks are returned as HxW uint8 0..255; foreground is ``mask > 128`` (PySODMetrics' rule, see
METRICS.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from segdeploy.data.base import DatasetError, Layout, Sample
from segdeploy.data.decoding import load_binary_mask, load_class_mask, load_gray_mask
from segdeploy.data.scanning import IMAGE_SUFFIXES, MASK_SUFFIXES, describe_folder, find_dir, index_files, pair_by_stem

#: Re-packagings many SOD code bases use; tried after a dataset's own folder names.
GENERIC_IMAGE_DIRS = ("images", "imgs", "image", "img", "im")
GENERIC_MASK_DIRS = ("masks", "gt", "ground_truth_mask", "mask", "gts", "groundtruth", "ground_truth", "labels")
#: In a folder holding images and masks together, images are JPEGs and masks PNGs.
MIXED_IMAGE_SUFFIXES = (".jpg", ".jpeg")
MIXED_MASK_SUFFIXES = (".png",)


class SODLayout(Layout):
    """Base of the salient-object sets; subclasses only name their folders.

    Class attributes:
        folder_names: names of the dataset's own top folder; the root may point at it or at a
            folder up to two levels above it.
        dir_pairs: (images, masks) folders relative to the dataset folder, as distributed.
        mixed_dirs: folders holding JPEG images and PNG masks side by side ("" = the folder itself).

    Options:
        images, masks: explicit folders (relative to the root, or absolute) instead of the search.
    """

    task = "saliency"
    mask_encoding = "gray"
    gt_threshold = 128.0
    folder_names: ClassVar[tuple[str, ...]] = ()
    dir_pairs: ClassVar[tuple[tuple[str, str], ...]] = ()
    mixed_dirs: ClassVar[tuple[str, ...]] = ()
    options = {
        "images": "image folder (relative to the root or absolute), overrides the search",
        "masks": "mask folder (relative to the root or absolute), overrides the search",
    }

    @classmethod
    def _bases(cls, root: Path) -> list[Path]:
        """The root, then the dataset's own folder found one or two levels below it."""
        bases = [root]
        frontier = [root]
        for _ in range(2):
            found = []
            for base in frontier:
                for name in cls.folder_names:
                    sub = find_dir(base, name)
                    if sub is not None and sub not in bases:
                        found.append(sub)
            bases += found
            frontier = found
        return bases

    @classmethod
    def _expected(cls) -> str:
        own = [f"{i}/ + {m}/" for i, m in cls.dir_pairs]
        own += [f"{d or '.'}/ holding *.jpg images and *.png masks together" for d in cls.mixed_dirs]
        generic = f"{'|'.join(GENERIC_IMAGE_DIRS)}/ + {'|'.join(GENERIC_MASK_DIRS)}/"
        where = f" (in the root, or in {'/'.join(cls.folder_names)}/ below it)" if cls.folder_names else ""
        return "; ".join(own + [generic]) + where

    @classmethod
    def _locate(cls, root: Path) -> tuple[Path, Path, bool]:
        """(image folder, mask folder, mixed?) for the first candidate that exists."""
        for base in cls._bases(root):
            for image_rel, mask_rel in cls.dir_pairs:
                images, masks = find_dir(base, image_rel), find_dir(base, mask_rel)
                if images is not None and masks is not None:
                    return images, masks, False
            for rel in cls.mixed_dirs:
                folder = find_dir(base, rel) if rel else base
                if folder is not None and _holds_both(folder):
                    return folder, folder, True
            for image_rel in GENERIC_IMAGE_DIRS:
                images = find_dir(base, image_rel)
                if images is None:
                    continue
                for mask_rel in GENERIC_MASK_DIRS:
                    masks = find_dir(base, mask_rel)
                    if masks is not None:
                        return images, masks, False
        raise DatasetError(
            f"{cls.name}: {root} does not look like a {cls.title} root. Expected {cls._expected()}. "
            f"Found: {describe_folder(root)}. Point --data-root at the dataset folder, or give --images and --masks."
        )

    @classmethod
    def _scan(cls, root: Path, *, ids, strict: bool, require_masks: bool, **opts: Any) -> Layout:
        if ("images" in opts) != ("masks" in opts):
            raise DatasetError(f"{cls.name}: give both images and masks folders, or neither")
        if "images" in opts:
            images_dir = _resolve_dir(root, opts["images"], cls.name, "image")
            masks_dir = _resolve_dir(root, opts["masks"], cls.name, "mask")
            mixed = images_dir == masks_dir
        else:
            images_dir, masks_dir, mixed = cls._locate(root)
        if mixed:
            images = index_files(images_dir, MIXED_IMAGE_SUFFIXES, what="image")
            masks = index_files(masks_dir, MIXED_MASK_SUFFIXES, what="mask")
        else:
            images = index_files(images_dir, IMAGE_SUFFIXES, what="image")
            masks = index_files(masks_dir, MASK_SUFFIXES, what="mask")
        result = pair_by_stem(
            images, masks, layout_name=cls.name, image_dir=images_dir, mask_dir=masks_dir,
            strict=strict, require_masks=require_masks,
        )
        samples = [Sample(i, img, (m,) if m is not None else ()) for i, img, m in result.pairs]
        info = {"images_dir": str(images_dir), "masks_dir": str(masks_dir), "split": "all"}
        return cls(root, samples, info=info, skipped=result.skipped)

    def load_mask(self, sample: Sample) -> np.ndarray | None:
        if not sample.mask_paths:
            return None
        return load_gray_mask(sample.mask_paths[0], self.name)


def _holds_both(folder: Path) -> bool:
    """True when ``folder`` directly holds at least one JPEG and one PNG."""
    has_jpg = has_png = False
    try:
        for entry in os.scandir(folder):
            suffix = os.path.splitext(entry.name)[1].lower()
            has_jpg = has_jpg or suffix in MIXED_IMAGE_SUFFIXES
            has_png = has_png or suffix in MIXED_MASK_SUFFIXES
            if has_jpg and has_png:
                return True
    except OSError:
        return False
    return False


def _resolve_dir(root: Path, value: str | os.PathLike, name: str, what: str) -> Path:
    """``value`` as a folder: absolute, else under ``root``, else relative to the working directory."""
    given = Path(value).expanduser()
    path = given if given.is_absolute() else root / given
    if not path.is_dir() and not given.is_absolute() and given.is_dir():
        path = given
    if not path.is_dir():
        raise DatasetError(f"{name}: {what} folder {path} does not exist; {path.parent} holds: {describe_folder(path.parent)}")
    return path


class ECSSD(SODLayout):
    name = "ecssd"
    title = "ECSSD"
    description = "ECSSD (1000 images): images/*.jpg + ground_truth_mask/*.png"
    folder_names = ("ECSSD",)
    dir_pairs = (("images", "ground_truth_mask"),)


class DUTSTE(SODLayout):
    name = "duts-te"
    title = "DUTS-TE"
    description = "DUTS test set (5019 images): DUTS-TE-Image/ + DUTS-TE-Mask/"
    folder_names = ("DUTS-TE", "DUTS")
    dir_pairs = (("DUTS-TE-Image", "DUTS-TE-Mask"),)


class DUTSTR(SODLayout):
    name = "duts-tr"
    title = "DUTS-TR"
    description = "DUTS training set (10553 images): DUTS-TR-Image/ + DUTS-TR-Mask/"
    folder_names = ("DUTS-TR", "DUTS")
    dir_pairs = (("DUTS-TR-Image", "DUTS-TR-Mask"),)


class MSRAB(SODLayout):
    name = "msra-b"
    title = "MSRA-B"
    description = "MSRA-B (5000 images): *.jpg + *.png in one folder, or imgs/ + gt/; test list via --split-file"
    folder_names = ("MSRA-B", "MSRA_B", "MSRAB")
    dir_pairs = (("imgs", "gt"),)
    mixed_dirs = ("",)


class MSRA10K(SODLayout):
    name = "msra10k"
    title = "MSRA10K"
    description = "MSRA10K (10000 images): MSRA10K_Imgs_GT/Imgs/ holding *.jpg + *.png"
    folder_names = ("MSRA10K_Imgs_GT", "MSRA10K")
    dir_pairs = (("Imgs", "GT"),)
    mixed_dirs = ("Imgs", "")


class HKUIS(SODLayout):
    name = "hku-is"
    title = "HKU-IS"
    description = "HKU-IS (4447 images): imgs/*.png + gt/*.png"
    folder_names = ("HKU-IS", "HKU_IS", "HKUIS")
    dir_pairs = (("imgs", "gt"),)


class PASCALS(SODLayout):
    name = "pascal-s"
    title = "PASCAL-S"
    description = "PASCAL-S (850 images): datasets/imgs/pascal/ + datasets/masks/pascal/ (graded masks, fg > 128)"
    folder_names = ("PASCAL-S", "PASCAL_S", "PASCALS")
    dir_pairs = (("datasets/imgs/pascal", "datasets/masks/pascal"), ("imgs/pascal", "masks/pascal"))


class DUTOMRON(SODLayout):
    name = "dut-omron"
    title = "DUT-OMRON"
    description = "DUT-OMRON (5168 images): DUT-OMRON-image/ + pixelwiseGT-new-PNG/"
    folder_names = ("DUT-OMRON", "DUT_OMRON", "DUTOMRON")
    dir_pairs = (
        ("DUT-OMRON-image", "pixelwiseGT-new-PNG"),
        ("DUT-OMRON-image/DUT-OMRON-image", "pixelwiseGT-new-PNG"),
        ("DUT-OMRON-image", "DUT-OMRON-gt-pixelwise"),
    )


class Pairs(SODLayout):
    """Any image folder + mask folder paired by stem (``--images DIR --masks DIR``).

    Options:
        images, masks: the two folders (required; relative to the root when one is given).
        mask_suffix: removed from mask stems before pairing (``_mask`` for ``a_mask.png``).
        encoding: ``gray`` (saliency, fg = mask > 128; default), ``binary`` (0/1 out; palette
            indices or gray > 127) or ``classes`` (class ids, 255 = ignore; needs num_classes).
        num_classes: number of classes for ``encoding=classes``.
    """

    name = "pairs"
    title = "image/mask folder pair"
    description = "any --images DIR + --masks DIR, paired by file stem"
    options = {
        **SODLayout.options,
        "mask_suffix": "removed from mask stems before pairing, e.g. _mask",
        "encoding": "gray (saliency, default) | binary | classes",
        "num_classes": "class count for encoding=classes",
    }
    _TASKS = {"gray": "saliency", "binary": "binary", "classes": "semantic"}

    @classmethod
    def from_root(cls, root=None, **kwargs):  # type: ignore[override]
        images = kwargs.get("images")
        if images is None or kwargs.get("masks") is None:
            raise DatasetError("pairs: give both --images DIR and --masks DIR")
        if root is None:
            # Without a root, relative folders are relative to the working directory.
            root = Path.cwd()
        return super().from_root(root, **kwargs)

    @classmethod
    def _scan(cls, root: Path, *, ids, strict: bool, require_masks: bool, **opts: Any) -> Layout:
        encoding = opts.pop("encoding", "gray")
        if encoding not in cls._TASKS:
            raise DatasetError(f"pairs: encoding must be gray, binary or classes, got {encoding!r}")
        num_classes = int(opts.pop("num_classes", 1))
        if encoding == "classes" and num_classes < 2:
            raise DatasetError("pairs: encoding=classes needs num_classes (e.g. 21 for VOC)")
        suffix = opts.pop("mask_suffix", "")
        images_dir = _resolve_dir(root, opts["images"], cls.name, "image")
        masks_dir = _resolve_dir(root, opts["masks"], cls.name, "mask")
        images = index_files(images_dir, IMAGE_SUFFIXES, what="image")
        masks = index_files(masks_dir, MASK_SUFFIXES, strip_suffix=suffix, what="mask")
        result = pair_by_stem(
            images, masks, layout_name=cls.name, image_dir=images_dir, mask_dir=masks_dir,
            mask_hint=f"<stem>{suffix}.png", strict=strict, require_masks=require_masks,
        )
        samples = [Sample(i, img, (m,) if m is not None else ()) for i, img, m in result.pairs]
        info = {"images_dir": str(images_dir), "masks_dir": str(masks_dir), "split": "all", "encoding": encoding}
        layout = cls(root, samples, info=info, skipped=result.skipped)
        layout.mask_encoding = encoding
        layout.task = cls._TASKS[encoding]
        if encoding == "gray":
            layout.gt_threshold = 128.0
        else:
            layout.gt_threshold = None
        if encoding == "classes":
            layout.num_classes = num_classes
            layout.ignore_index = 255
        return layout

    def load_mask(self, sample: Sample) -> np.ndarray | None:
        if not sample.mask_paths:
            return None
        if self.mask_encoding == "binary":
            return load_binary_mask(sample.mask_paths[0], self.name)
        if self.mask_encoding == "classes":
            return load_class_mask(sample.mask_paths[0], self.name, self.num_classes, self.ignore_index)
        return load_gray_mask(sample.mask_paths[0], self.name)


SOD_LAYOUTS: tuple[type[SODLayout], ...] = (ECSSD, DUTSTE, DUTSTR, MSRAB, MSRA10K, HKUIS, PASCALS, DUTOMRON)
