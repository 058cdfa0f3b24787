"""Carvana Image Masking Challenge (milesial/Pytorch-UNet): ``train/*.jpg`` + ``train_masks/*_mask.gif``.

Accepted roots (any letter case): the Kaggle folder holding ``train/`` (or ``train_hq/``) and
``train_masks/``; milesial's ``data/`` with ``imgs/`` + ``masks/``; seed guide 001's
``test/`` with ``images/`` + ``masks/``. Masks are named ``<image stem>_mask.gif`` (``.png``
accepted; the ``_mask`` suffix is optional). Ground truth is returned as HxW uint8 0/1 (the GIF's
palette indices, as milesial's loader reads them).

Splits (``split=``):
    ``all`` (default) every pair found.
    ``val`` / ``train``: milesial train.py's split, ``val_percent=0.1`` and
    ``random_split(..., generator=torch.Generator().manual_seed(0))``, applied to the ids in
    ``order`` (``sorted`` by default; ``listdir`` = this machine's ``os.listdir(images)`` order,
    which is what upstream's ``BasicDataset`` used — upstream never sorts, so its split is only
    reproducible on the same directory listing). Upstream lists *every* file of the image folder;
    here only image files count, so stray non-image files there would shift upstream's indices.
    ``--split-file LIST`` restricts to the listed ids instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segdeploy.data.base import DatasetError, Layout, Sample
from segdeploy.data.decoding import load_binary_mask
from segdeploy.data.scanning import IMAGE_SUFFIXES, MASK_SUFFIXES, describe_folder, find_dir, index_files, pair_by_stem
from segdeploy.data.splits import SPLIT_ORDERS, ordered_ids, torch_val_indices

#: (images, masks) folders as distributed / as the seed tooling arranges them, in search order.
CARVANA_DIR_PAIRS = (
    ("train", "train_masks"),
    ("train_hq", "train_masks"),
    ("imgs", "masks"),
    ("images", "masks"),
    ("data/imgs", "data/masks"),
    ("test/images", "test/masks"),
)
MASK_SUFFIX = "_mask"


class Carvana(Layout):
    """Carvana image/mask pairs with milesial's seeded validation split.

    Options:
        split: ``all`` | ``train`` | ``val`` (default ``all``).
        val_percent: validation fraction (default 0.1, upstream ``--validation 10``).
        seed: generator seed (default 0, as upstream).
        order: ``sorted`` | ``listdir``: id order the split is applied to.
        images, masks: explicit folders instead of the search.
    """

    name = "carvana"
    title = "Carvana"
    description = "Carvana: train/*.jpg + train_masks/*_mask.gif; split all|train|val (milesial, seed 0, 10 %)"
    task = "binary"
    mask_encoding = "binary"
    options = {
        "split": "all | train | val (milesial train.py: random_split, val_percent, seed)",
        "val_percent": "validation fraction for split=train|val (default 0.1)",
        "seed": "torch.Generator seed for split=train|val (default 0)",
        "order": "sorted | listdir: id order the split is applied to (default sorted)",
        "images": "image folder (relative to the root or absolute)",
        "masks": "mask folder (relative to the root or absolute)",
    }

    @classmethod
    def _locate(cls, root: Path) -> tuple[Path, Path]:
        for image_rel, mask_rel in CARVANA_DIR_PAIRS:
            images, masks = find_dir(root, image_rel), find_dir(root, mask_rel)
            if images is not None and masks is not None:
                return images, masks
        expected = "; ".join(f"{i}/ + {m}/" for i, m in CARVANA_DIR_PAIRS)
        raise DatasetError(
            f"carvana: {root} does not look like a Carvana root. Expected one of: {expected} "
            f"(masks named <image stem>_mask.gif). Found: {describe_folder(root)}. "
            "Unzip train.zip and train_masks.zip into one folder and point --data-root at it."
        )

    @classmethod
    def _scan(cls, root: Path, *, ids, strict: bool, require_masks: bool, **opts: Any) -> Layout:
        split = opts.get("split", "all")
        if split not in ("all", "train", "val"):
            raise DatasetError(f"carvana: split must be all, train or val, got {split!r}")
        order = opts.get("order", "sorted")
        if order not in SPLIT_ORDERS:
            raise DatasetError(f"carvana: order must be one of {', '.join(SPLIT_ORDERS)}, got {order!r}")
        val_percent = float(opts.get("val_percent", 0.1))
        seed = int(opts.get("seed", 0))
        if ("images" in opts) != ("masks" in opts):
            raise DatasetError("carvana: give both images and masks folders, or neither")
        if "images" in opts:
            images_dir = _as_dir(root, opts["images"])
            masks_dir = _as_dir(root, opts["masks"])
        else:
            images_dir, masks_dir = cls._locate(root)
        images = index_files(images_dir, IMAGE_SUFFIXES, what="image")
        masks = index_files(masks_dir, MASK_SUFFIXES, strip_suffix=MASK_SUFFIX, what="mask")
        result = pair_by_stem(
            images, masks, layout_name=cls.name, image_dir=images_dir, mask_dir=masks_dir,
            mask_hint="<stem>_mask.gif", strict=strict, require_masks=require_masks,
        )
        by_id = {i: Sample(i, img, (m,) if m is not None else ()) for i, img, m in result.pairs}
        info: dict[str, Any] = {"images_dir": str(images_dir), "masks_dir": str(masks_dir), "split": split}
        if split == "all" or ids is not None:
            samples = [by_id[i] for i in sorted(by_id)]
        else:
            order_ids = ordered_ids({i: s.image_path for i, s in by_id.items()}, order)
            try:
                val_idx = torch_val_indices(len(order_ids), val_percent, seed)
            except ValueError as exc:
                raise DatasetError(f"carvana: {exc}") from None
            val_set = set(val_idx)
            chosen = val_idx if split == "val" else [i for i in range(len(order_ids)) if i not in val_set]
            samples = [by_id[order_ids[i]] for i in chosen]
            info["split_rule"] = (
                f"milesial/Pytorch-UNet train.py: n_val = int({len(order_ids)} * {val_percent}) = "
                f"{len(val_idx)}; torch.utils.data.random_split(range(n), [n - n_val, n_val], "
                f"generator=torch.Generator().manual_seed({seed})) over ids in {order} order; "
                f"{split} part in random_split's order"
            )
        return cls(root, samples, info=info, skipped=result.skipped)

    def load_mask(self, sample: Sample) -> np.ndarray | None:
        if not sample.mask_paths:
            return None
        return load_binary_mask(sample.mask_paths[0], self.name)


def _as_dir(root: Path, value) -> Path:
    given = Path(value).expanduser()
    path = given if given.is_absolute() else root / given
    if not path.is_dir() and not given.is_absolute() and given.is_dir():
        path = given
    if not path.is_dir():
        raise DatasetError(f"carvana: folder {path} does not exist; {path.parent} holds: {describe_folder(path.parent)}")
    return path
