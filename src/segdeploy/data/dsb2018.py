"""2018 Data Science Bowl nuclei (4uiiurz1/pytorch-nested-unet), raw and prepared at 96x96.

Raw layout (Kaggle ``stage1_train.zip``): ``stage1_train/<id>/images/<id>.png`` (RGBA, some gray)
and ``stage1_train/<id>/masks/*.png`` (one 0/255 PNG per nucleus). The root may be the folder
holding ``stage1_train/`` or ``stage1_train/`` itself. Ground truth = union of the instance masks
(``> 127``), HxW uint8 0/1 at native size.

Prepared layout (what upstream ``preprocess_dsb2018.py`` writes to ``inputs/dsb2018_96`` and
:func:`prepare_dsb2018` writes to any folder): ``images/<id>.png`` (BGR-written 3-channel PNG,
96x96) + ``masks/0/<id>.png`` (uint8 0..255, 96x96) [+ ``val_ids.txt``]. Ground truth is the stored
gray mask; upstream's dataset divides it by 255 and ``metrics.iou_score`` takes ``target > 0.5``,
so foreground = ``mask > 127.5``.

Validation split (``split=val``, the default): upstream train.py / val.py call
``train_test_split(img_ids, test_size=0.2, random_state=41)`` on ids from ``glob`` (directory
order). The ids come from, in priority: ``--split-file``; ``val_ids.txt`` in a prepared root (the
file :func:`prepare_dsb2018` writes, or the fixed list of seed guide 002 copied there); otherwise
the rule applied to the ids in ``order`` (``sorted`` default, ``listdir`` for this machine's order).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segdeploy.data.base import DatasetError, Layout, Sample, as_bool
from segdeploy.data.decoding import load_gray_mask
from segdeploy.data.id_lists import read_id_list, select_ids
from segdeploy.data.scanning import describe_folder, find_dir, format_names, index_files, pair_by_stem
from segdeploy.data.splits import SPLIT_ORDERS, ordered_ids, sklearn_val_indices

VAL_IDS_FILE = "val_ids.txt"
MANIFEST_FILE = "prepare.json"
#: Upstream constants (train.py, val.py).
TEST_SIZE = 0.2
RANDOM_STATE = 41


class DSB2018(Layout):
    """DSB2018 stage-1 training images, raw or prepared (``variant``), with upstream's val split.

    Options:
        variant: ``auto`` (default: detect), ``raw`` or ``prepared``.
        split: ``val`` (default) | ``train`` | ``all``.
        order: ``sorted`` | ``listdir``: id order train_test_split is applied to when no
            ``val_ids.txt`` is used.
        use_val_ids: read ``val_ids.txt`` from a prepared root when present (default True).
    """

    name = "dsb2018"
    title = "DSB2018"
    description = (
        "2018 Data Science Bowl: raw stage1_train/<id>/{images,masks}/ or prepared images/ + masks/0/ "
        "(segdeploy prepare dsb2018); split val|train|all (train_test_split 0.2, seed 41)"
    )
    task = "binary"
    mask_encoding = "binary"
    options = {
        "variant": "auto | raw | prepared (default auto)",
        "split": "val (default) | train | all",
        "order": "sorted | listdir: id order the upstream split is applied to (default sorted)",
        "use_val_ids": "use val_ids.txt of a prepared root when present (default true)",
    }

    # ------------------------------------------------------------------ scanning
    @classmethod
    def _detect(cls, root: Path, variant: str) -> tuple[str, Path]:
        """(variant, folder) where folder is stage1_train/ (raw) or the prepared root."""
        stage1 = find_dir(root, "stage1_train")
        looks_prepared = find_dir(root, "images") is not None and find_dir(root, "masks") is not None
        looks_raw_itself = _looks_like_stage1(root)
        if variant in ("auto", "raw"):
            if stage1 is not None:
                return "raw", stage1
            if looks_raw_itself and not looks_prepared:
                return "raw", root
        if variant in ("auto", "prepared") and looks_prepared:
            return "prepared", root
        if variant == "prepared" and (stage1 is not None or looks_raw_itself):
            raise DatasetError(
                f"dsb2018: {root} is the raw download, not the prepared 96x96 layout; run "
                f"`segdeploy prepare dsb2018 --data-root {root} -o OUT` and point --data-root at OUT "
                "(or read the raw images with variant=raw)"
            )
        wanted = {
            "auto": "stage1_train/<id>/images/<id>.png + stage1_train/<id>/masks/*.png (raw), "
            "or images/*.png + masks/0/*.png (prepared by `segdeploy prepare dsb2018`)",
            "raw": "stage1_train/<id>/images/<id>.png + stage1_train/<id>/masks/*.png",
            "prepared": "images/*.png + masks/0/*.png (run `segdeploy prepare dsb2018 --data-root RAW -o OUT`)",
        }[variant]
        raise DatasetError(f"dsb2018: {root} does not look like a DSB2018 root. Expected {wanted}. Found: {describe_folder(root)}.")

    @classmethod
    def _scan(cls, root: Path, *, ids, strict: bool, require_masks: bool, **opts: Any) -> Layout:
        variant = opts.get("variant", "auto")
        if variant not in ("auto", "raw", "prepared"):
            raise DatasetError(f"dsb2018: variant must be auto, raw or prepared, got {variant!r}")
        split = opts.get("split", "val")
        if split not in ("val", "train", "all"):
            raise DatasetError(f"dsb2018: split must be val, train or all, got {split!r}")
        order = opts.get("order", "sorted")
        if order not in SPLIT_ORDERS:
            raise DatasetError(f"dsb2018: order must be one of {', '.join(SPLIT_ORDERS)}, got {order!r}")
        use_val_ids = as_bool(opts.get("use_val_ids", True))
        variant, folder = cls._detect(root, variant)
        if variant == "raw":
            samples, skipped, entries = scan_raw(folder, strict=strict, require_masks=require_masks)
        else:
            samples, skipped, entries = _scan_prepared(folder, strict=strict, require_masks=require_masks)
        info: dict[str, Any] = {"variant": variant, "folder": str(folder), "split": split}
        if ids is None and split != "all":
            val_file = folder / VAL_IDS_FILE if variant == "prepared" else None
            if use_val_ids and val_file is not None and val_file.is_file():
                val_ids = read_id_list(val_file)
                select_ids(samples, val_ids, source=str(val_file), layout_name=cls.name)  # validates
                info["split_rule"] = f"validation ids from {val_file}"
            else:
                val_ids = upstream_val_ids(ordered_ids(entries, order))
                info["split_rule"] = (
                    f"4uiiurz1 train.py: train_test_split(ids, test_size={TEST_SIZE}, random_state={RANDOM_STATE}) "
                    f"over {len(entries)} ids in {order} order; val part in its returned order"
                )
            by_id = {s.id: s for s in samples}
            if split == "val":
                samples = [by_id[i] for i in val_ids]
            else:
                val_set = set(val_ids)
                samples = [s for s in samples if s.id not in val_set]
        layout = cls(root, samples, info=info, skipped=skipped)
        if variant == "prepared":
            layout.mask_encoding = "gray"
            layout.gt_threshold = 127.5
        return layout

    # ------------------------------------------------------------------ decoding
    def load_mask(self, sample: Sample) -> np.ndarray | None:
        if not sample.mask_paths:
            return None
        if self.info.get("variant") == "prepared":
            return load_gray_mask(sample.mask_paths[0], self.name)
        return union_mask(sample.mask_paths, self.name).astype(np.uint8)


# ---------------------------------------------------------------------- helpers
def _looks_like_stage1(folder: Path) -> bool:
    """True when some sub-folder of ``folder`` has an ``images/`` sub-folder (a DSB sample)."""
    try:
        for entry in os.scandir(folder):
            if entry.is_dir() and not entry.name.startswith(".") and os.path.isdir(os.path.join(entry.path, "images")):
                return True
    except OSError:
        return False
    return False


def scan_raw(stage1: Path, *, strict: bool = True, require_masks: bool = True):
    """Samples of a raw ``stage1_train`` folder: (samples sorted by id, skipped, id → sample folder)."""
    no_image: list[str] = []
    no_masks: list[str] = []
    stray: list[str] = []
    samples: list[Sample] = []
    entries: dict[str, Path] = {}
    for entry in sorted(os.scandir(stage1), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            stray.append(entry.name)
            continue
        sample_id = entry.name
        folder = Path(entry.path)
        image = folder / "images" / f"{sample_id}.png"
        if not image.is_file():
            no_image.append(f"{sample_id} (no images/{sample_id}.png)")
            continue
        mask_dir = folder / "masks"
        masks = tuple(sorted(index_files(mask_dir, (".png",), what="mask").values())) if mask_dir.is_dir() else ()
        if not masks and require_masks:
            no_masks.append(f"{sample_id} (no masks/*.png)")
            continue
        samples.append(Sample(sample_id, image, masks))
        entries[sample_id] = folder
    problems = []
    if no_image:
        problems.append(f"{len(no_image)} sample folder(s) without their image: {format_names(no_image)}")
    if no_masks:
        problems.append(f"{len(no_masks)} image(s) without any instance mask: {format_names(no_masks)}")
    if not samples and not problems:
        raise DatasetError(f"dsb2018: {stage1} holds no sample folders <id>/images/<id>.png; found: {describe_folder(stage1)}")
    if problems and strict:
        raise DatasetError(
            f"dsb2018: broken raw folder {stage1}: " + "; ".join(problems)
            + ". Re-extract stage1_train.zip, or skip these samples with --skip-unmatched."
        )
    skipped = [(p.split(" ", 1)[0], p.split(" ", 1)[1].strip("()")) for p in no_image + no_masks]
    return samples, skipped, entries


def _scan_prepared(folder: Path, *, strict: bool, require_masks: bool):
    images_dir = find_dir(folder, "images")
    masks_dir = find_dir(folder, "masks/0")
    if images_dir is None or masks_dir is None:
        raise DatasetError(
            f"dsb2018: prepared root {folder} needs images/ and masks/0/ (upstream dsb2018_96 layout); "
            f"found: {describe_folder(folder)}" + (f"; masks/ holds: {describe_folder(folder / 'masks')}" if (folder / "masks").is_dir() else "")
        )
    images = index_files(images_dir, (".png",), what="image")
    masks = index_files(masks_dir, (".png",), what="mask")
    result = pair_by_stem(
        images, masks, layout_name="dsb2018", image_dir=images_dir, mask_dir=masks_dir,
        strict=strict, require_masks=require_masks,
    )
    samples = [Sample(i, img, (m,) if m is not None else ()) for i, img, m in result.pairs]
    entries = {s.id: s.image_path for s in samples}
    return samples, result.skipped, entries


def upstream_val_ids(ids: list[str], test_size: float = TEST_SIZE, random_state: int = RANDOM_STATE) -> list[str]:
    """The validation ids of ``train_test_split(ids, test_size, random_state)``, in its order."""
    return [ids[i] for i in sklearn_val_indices(len(ids), test_size, random_state)]


def union_mask(mask_paths, layout_name: str = "dsb2018") -> np.ndarray:
    """Union of instance masks as a bool array: pixel set where any mask is > 127.

    Masks are read with ``cv2.imread(path, cv2.IMREAD_GRAYSCALE)``, as preprocess_dsb2018.py does.
    """
    import cv2

    union = None
    for path in mask_paths:
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise DatasetError(f"{layout_name}: cannot decode instance mask {path}")
        if union is None:
            union = mask > 127
        elif mask.shape != union.shape:
            raise DatasetError(
                f"{layout_name}: instance mask {path} is {mask.shape[1]}x{mask.shape[0]}, the others of this image "
                f"are {union.shape[1]}x{union.shape[0]}"
            )
        else:
            union |= mask > 127
    if union is None:
        raise DatasetError(f"{layout_name}: no instance masks given")
    return union


# ---------------------------------------------------------------------- preparation
@dataclass
class PrepareReport:
    """What :func:`prepare_dsb2018` did. Counts are samples (an image + its mask)."""

    out_root: Path
    total: int
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    val_ids_written: bool = False
    manifest_written: bool = False
    num_val: int = 0

    @property
    def wrote_anything(self) -> bool:
        return bool(self.written) or self.val_ids_written or self.manifest_written


def prepare_sample(image_path: Path, mask_paths, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One sample as preprocess_dsb2018.py makes it: (BGR uint8 size x size x 3, uint8 mask).

    Image: ``cv2.imread`` (3-channel BGR; gray tiled to 3 channels, alpha dropped), then
    ``cv2.resize(img, (size, size))`` (INTER_LINEAR). Mask: float64 zeros set to 1 where any
    instance mask is > 127, ``cv2.resize`` (INTER_LINEAR, float64), then ``(mask * 255)``
    truncated to uint8.
    """
    import cv2

    img = cv2.imread(str(image_path))
    if img is None:
        raise DatasetError(f"dsb2018: cannot decode image {image_path}")
    if img.ndim == 2:
        img = np.tile(img[..., None], (1, 1, 3))
    if img.shape[2] == 4:
        img = img[..., :3]
    union = union_mask(mask_paths)
    if union.shape != img.shape[:2]:
        raise DatasetError(
            f"dsb2018: masks of {image_path} are {union.shape[1]}x{union.shape[0]}, the image is {img.shape[1]}x{img.shape[0]}"
        )
    mask = np.zeros(img.shape[:2], dtype=np.float64)
    mask[union] = 1
    img = cv2.resize(img, (size, size))
    mask = cv2.resize(mask, (size, size))
    return img, (mask * 255).astype(np.uint8)


def _encode_png(array: np.ndarray) -> bytes:
    import cv2

    ok, buffer = cv2.imencode(".png", array)
    if not ok:  # pragma: no cover - cv2 fails only on invalid arrays
        raise DatasetError("dsb2018: PNG encoding failed")
    return buffer.tobytes()


def _write_if_changed(path: Path, data: bytes) -> bool:
    from segdeploy.engine.writers import atomic_write_bytes

    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    atomic_write_bytes(path, data)
    return True


def prepare_dsb2018(
    raw_root: str | os.PathLike,
    out_root: str | os.PathLike,
    *,
    size: int = 96,
    force: bool = False,
    order: str = "sorted",
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PrepareReport:
    """Write the upstream ``dsb2018_<size>`` layout from a raw ``stage1_train`` download.

    Writes ``OUT/images/<id>.png``, ``OUT/masks/0/<id>.png`` (see :func:`prepare_sample`),
    ``OUT/val_ids.txt`` (upstream's validation ids, see :func:`upstream_val_ids`, ids in ``order``)
    and ``OUT/prepare.json`` (parameters). Idempotent: a sample whose two files exist is not
    recomputed unless ``force``; text files are rewritten only when their content changes; every
    write goes through a temporary file and a rename.

    Raises:
        DatasetError: broken raw root, or OUT prepared earlier with different parameters (without force).
    """
    if size < 1:
        raise DatasetError(f"dsb2018: size must be positive, got {size}")
    root = Path(raw_root).expanduser()
    layout = DSB2018.from_root(root, variant="raw", split="all")
    stage1 = Path(layout.info["folder"])
    out = Path(out_root).expanduser()
    if out.resolve() == stage1.resolve() or stage1.resolve() in out.resolve().parents:
        raise DatasetError(f"dsb2018: output {out} must not be inside the raw folder {stage1}")
    manifest_path = out / MANIFEST_FILE
    params = {"size": size, "order": order, "test_size": TEST_SIZE, "random_state": RANDOM_STATE}
    if manifest_path.is_file() and not force:
        try:
            old = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            old = {}
        old_params = {k: old.get(k) for k in params}
        if old_params != params:
            raise DatasetError(
                f"dsb2018: {out} was prepared with {old_params}, now asked for {params}; "
                "use another output folder or --force to rebuild it"
            )
    images_dir, masks_dir = out / "images", out / "masks" / "0"
    samples = list(layout)
    report = PrepareReport(out_root=out, total=len(samples))
    todo = [
        s for s in samples
        if force or not ((images_dir / f"{s.id}.png").is_file() and (masks_dir / f"{s.id}.png").is_file())
    ]
    report.unchanged = sorted({s.id for s in samples} - {s.id for s in todo})

    def work(sample: Sample) -> str:
        img, mask = prepare_sample(sample.image_path, sample.mask_paths, size)
        from segdeploy.engine.writers import atomic_write_bytes

        atomic_write_bytes(images_dir / f"{sample.id}.png", _encode_png(img))
        atomic_write_bytes(masks_dir / f"{sample.id}.png", _encode_png(mask))
        return sample.id

    done = len(report.unchanged)
    if todo:
        from concurrent.futures import ThreadPoolExecutor

        images_dir.mkdir(parents=True, exist_ok=True)
        masks_dir.mkdir(parents=True, exist_ok=True)
        # cv2 releases the GIL while decoding and resizing, so threads scale on the PNG work.
        with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
            for sample_id in pool.map(work, todo):
                report.written.append(sample_id)
                done += 1
                if progress is not None:
                    progress(done, len(samples))
    entries = {s.id: s.image_path.parent.parent for s in samples}
    if order == "listdir":
        # Upstream globbed the *prepared* images folder; its listing is what train.py split.
        entries = {s.id: images_dir / f"{s.id}.png" for s in samples}
    val_ids = upstream_val_ids(ordered_ids(entries, order))
    report.num_val = len(val_ids)
    report.val_ids_written = _write_if_changed(out / VAL_IDS_FILE, ("\n".join(val_ids) + "\n").encode())
    manifest = {
        **params,
        "source": str(stage1.resolve()),
        "num_samples": len(samples),
        "num_val": len(val_ids),
        "recipe": (
            "4uiiurz1/pytorch-nested-unet preprocess_dsb2018.py: cv2.imread (BGR, 3 ch), cv2.resize to size x size "
            "(INTER_LINEAR); mask = union of instance masks > 127 as float64, cv2.resize, (x255).astype(uint8); "
            "val_ids = train_test_split(ids, test_size=0.2, random_state=41)[1]"
        ),
    }
    report.manifest_written = _write_if_changed(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode())
    return report
