"""PASCAL VOC 2012 segmentation (1-stage-wseg): ``VOCdevkit/VOC2012/{JPEGImages,SegmentationClass}``.

The root may be the folder holding ``VOCdevkit/``, ``VOCdevkit/`` itself, ``VOC2012/`` itself, or
1-stage-wseg's ``data/`` folder holding ``voc/VOCdevkit/VOC2012``. Samples are the ids of
``ImageSets/Segmentation/<split>.txt`` in that file's order (``val`` = 1449 images); a wseg-style
file list (``voc/.../JPEGImages/x.jpg voc/.../SegmentationClass/x.png`` per line, such as
1-stage-wseg's ``data/val_voc.txt``) can be given with ``--split-file``.

Ground truth: the ``SegmentationClass`` palette PNG read as palette **indices** (class ids 0..20,
255 = object boundary / don't care, kept as 255), HxW uint8.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segdeploy.data.base import DatasetError, Layout, Sample
from segdeploy.data.decoding import load_class_mask
from segdeploy.data.id_lists import read_id_list
from segdeploy.data.scanning import describe_folder, find_dir, format_names

#: Where VOC2012 may sit relative to the given root, in search order.
VOC_CANDIDATES = ("", "VOC2012", "VOCdevkit/VOC2012", "voc/VOCdevkit/VOC2012", "VOCtrainval_11-May-2012/VOCdevkit/VOC2012")

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


class VOC2012(Layout):
    """VOC2012 semantic segmentation with the official split files.

    Options:
        split: name of ``ImageSets/Segmentation/<split>.txt`` (default ``val``; also ``train``,
            ``trainval``).
        mask_dir: ground-truth folder under VOC2012 (default ``SegmentationClass``; e.g.
            ``SegmentationClassAug`` when the augmented set is unpacked there).
    """

    name = "voc2012"
    title = "PASCAL VOC 2012"
    description = "PASCAL VOC 2012 segmentation: VOCdevkit/VOC2012 JPEGImages + SegmentationClass, split val|train|trainval"
    task = "semantic"
    mask_encoding = "classes"
    num_classes = 21
    ignore_index = 255
    class_names = VOC_CLASSES
    options = {
        "split": "ImageSets/Segmentation/<split>.txt (default val)",
        "mask_dir": "ground-truth folder under VOC2012 (default SegmentationClass)",
    }

    @classmethod
    def _locate(cls, root: Path, mask_dir: str) -> Path:
        for rel in VOC_CANDIDATES:
            base = find_dir(root, rel) if rel else root
            if base is not None and find_dir(base, "JPEGImages") is not None:
                return base
        raise DatasetError(
            f"voc2012: {root} does not look like a PASCAL VOC 2012 root. Expected VOC2012/ holding JPEGImages/, "
            f"{mask_dir}/ and ImageSets/Segmentation/, at one of: "
            + ", ".join(f"<root>/{r}" if r else "<root>" for r in VOC_CANDIDATES)
            + f". Found: {describe_folder(root)}. Extract VOCtrainval_11-May-2012.tar and point --data-root at the "
            "folder holding VOCdevkit/."
        )

    @classmethod
    def _scan(cls, root: Path, *, ids, strict: bool, require_masks: bool, **opts: Any) -> Layout:
        split = str(opts.get("split", "val"))
        mask_dir_name = str(opts.get("mask_dir", "SegmentationClass"))
        voc = cls._locate(root, mask_dir_name)
        images_dir = find_dir(voc, "JPEGImages")
        masks_dir = find_dir(voc, mask_dir_name)
        if masks_dir is None and require_masks:
            raise DatasetError(
                f"voc2012: {voc} has no {mask_dir_name}/ folder of ground-truth PNGs; it holds: {describe_folder(voc)}"
            )
        info: dict[str, Any] = {"voc_dir": str(voc), "images_dir": str(images_dir), "masks_dir": str(masks_dir)}
        if ids is None:
            split_file = find_dir(voc, "ImageSets/Segmentation")
            list_path = split_file / f"{split}.txt" if split_file is not None else None
            if list_path is None or not list_path.is_file():
                where = split_file if split_file is not None else voc / "ImageSets" / "Segmentation"
                available = sorted(p.stem for p in where.glob("*.txt")) if where.is_dir() else []
                raise DatasetError(
                    f"voc2012: split list {where / (split + '.txt')} not found"
                    + (f"; available splits: {', '.join(available)}" if available else f"; {voc} holds: {describe_folder(voc)}")
                )
            ids = read_id_list(list_path)
            info["split"] = split
            info["split_file"] = str(list_path)
        samples: list[Sample] = []
        skipped: list[tuple[str, str]] = []
        no_image: list[str] = []
        no_mask: list[str] = []
        for sample_id in ids:
            image = images_dir / f"{sample_id}.jpg"
            if not image.is_file():
                no_image.append(sample_id)
                continue
            mask = masks_dir / f"{sample_id}.png" if masks_dir is not None else None
            if mask is None or not mask.is_file():
                if require_masks:
                    no_mask.append(sample_id)
                    continue
                samples.append(Sample(sample_id, image, ()))
                continue
            samples.append(Sample(sample_id, image, (mask,)))
        problems = []
        if no_image:
            problems.append(f"{len(no_image)} listed id(s) have no JPEGImages/<id>.jpg: {format_names(no_image)}")
        if no_mask:
            problems.append(f"{len(no_mask)} listed id(s) have no {mask_dir_name}/<id>.png: {format_names(no_mask)}")
        if problems and strict:
            raise DatasetError(
                f"voc2012: incomplete {voc}: " + "; ".join(problems)
                + ". Re-extract the VOC tar, or skip these ids with --skip-unmatched."
            )
        skipped += [(f"{i}.jpg", "listed but missing from JPEGImages") for i in no_image]
        skipped += [(f"{i}.jpg", f"no ground truth in {mask_dir_name}") for i in no_mask]
        return cls(root, samples, info=info, skipped=skipped)

    def load_mask(self, sample: Sample) -> np.ndarray | None:
        if not sample.mask_paths:
            return None
        return load_class_mask(sample.mask_paths[0], self.name, self.num_classes, self.ignore_index)
