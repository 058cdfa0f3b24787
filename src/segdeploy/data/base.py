"""Dataset layout machinery shared by every reader: samples, errors, folder scanning, pairing.

A *layout* knows how one public dataset is laid out on disk. ``Layout.from_root(root, **opts)``
scans the folders once, pairs every image with its ground truth, and raises
:class:`DatasetError` with an actionable message (which folders were expected, what was found,
which files have no partner) when the root does not match. Iterating a layout yields
:class:`Sample` records (paths only); ``layout.load(sample)`` decodes one image and its mask.

Only numpy is imported at module level; Pillow and OpenCV are imported when a file is read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

#: Suffixes accepted for input images (lower case). Kept in step with segdeploy.engine.images.
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: Suffixes accepted for ground-truth masks (lower case). GIF is Carvana's mask format.
MASK_SUFFIXES: tuple[str, ...] = (".png", ".gif", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")

#: How many names an error message lists before it only gives the count.
_SHOW = 5


from segdeploy.core.errors import DatasetError  # noqa: E402  (defined in core, raised here)


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

    @property
    def has_mask(self) -> bool:
        return bool(self.mask_paths)


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


def select_ids(samples: Sequence[Sample], ids: Sequence[str], *, source: str, layout_name: str) -> list[Sample]:
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


# --------------------------------------------------------------------- file decoding helpers
def read_rgb(path: Path) -> np.ndarray:
    """Read an input image as HxWx3 uint8 RGB through segdeploy.engine.images.read_image.

    The one place readers decode images, so a change of reader happens here only.
    """
    from segdeploy.engine.images import read_image

    return read_image(path)


def open_mask(path: Path, layout_name: str):
    """Open a mask file with Pillow (fully decoded), turning failures into DatasetError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except FileNotFoundError:
        raise DatasetError(f"{layout_name}: mask {path} does not exist (was it moved after the scan?)") from None
    except UnidentifiedImageError:
        raise DatasetError(f"{layout_name}: mask {path} is not an image Pillow can identify (corrupt or wrong suffix)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{layout_name}: mask {path} is corrupt or truncated ({exc})") from exc


def gray_uint8(img) -> np.ndarray:
    """A Pillow image as an HxW uint8 gray array (0..255) whatever its mode.

    1-bit → 0/255; 16-bit / 32-bit integer → top 8 bits of a 16-bit range; RGB/RGBA/LA/P → Pillow's
    ``convert('L')`` (for the black/white masks of saliency sets every channel is equal, so the
    luminance weights do not matter).
    """
    mode = img.mode
    if mode == "L":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode == "1":
        return np.asarray(img, dtype=bool).astype(np.uint8) * 255
    if mode.startswith("I"):
        array = np.asarray(img).astype(np.int64)
        return np.clip(array >> 8, 0, 255).astype(np.uint8)
    if mode == "F":
        array = np.asarray(img, dtype=np.float64)
        if array.max(initial=0) <= 1.0:
            array = array * 255.0
        return np.clip(np.round(array), 0, 255).astype(np.uint8)
    return np.asarray(img.convert("L"), dtype=np.uint8).copy()


def load_gray_mask(path: Path, layout_name: str) -> np.ndarray:
    """A saliency ground truth as HxW uint8 0..255 (see :func:`gray_uint8`)."""
    return gray_uint8(open_mask(path, layout_name))


def load_binary_mask(path: Path, layout_name: str) -> np.ndarray:
    """A binary ground truth as HxW uint8 0/1.

    Palette images (Carvana's GIFs) are read as palette *indices*, as milesial's loader does with
    ``np.asarray(Image.open(f))``; other modes as gray. Values already in {0, 1} are kept; otherwise
    foreground = value > 127 (0/255 masks, anti-aliased edges).
    """
    img = open_mask(path, layout_name)
    array = np.asarray(img, dtype=np.uint8) if img.mode in ("P", "L") else gray_uint8(img)
    if array.ndim != 2:
        raise DatasetError(f"{layout_name}: mask {path} decodes to shape {array.shape}, expected HxW")
    if array.max(initial=0) <= 1:
        return array.copy()
    return (array > 127).astype(np.uint8)


def load_class_mask(path: Path, layout_name: str, num_classes: int, ignore_index: int | None) -> np.ndarray:
    """A semantic ground truth as HxW uint8 class ids (``ignore_index`` kept as is).

    Palette PNGs (VOC ``SegmentationClass``) are read as palette **indices**, never converted to
    RGB. Gray PNGs hold the ids directly. An RGB rendering of the VOC colour map is mapped back to
    ids through that colour map. Values that are neither a class id nor ``ignore_index`` raise.
    """
    img = open_mask(path, layout_name)
    if img.mode in ("P", "L"):
        ids = np.asarray(img, dtype=np.uint8).copy()
    elif img.mode in ("RGB", "RGBA"):
        ids = _voc_colors_to_ids(np.asarray(img.convert("RGB")), path, layout_name)
    else:
        raise DatasetError(
            f"{layout_name}: mask {path} has mode {img.mode!r}; expected a palette (P) or gray (L) PNG of class ids"
        )
    bad = (ids >= num_classes) if ignore_index is None else (ids >= num_classes) & (ids != ignore_index)
    if bad.any():
        values = sorted({int(v) for v in np.unique(ids[bad])})
        raise DatasetError(
            f"{layout_name}: mask {path} holds value(s) {values[:10]} outside the {num_classes} class ids"
            + (f" and the ignore label {ignore_index}" if ignore_index is not None else "")
        )
    return ids


def _voc_colors_to_ids(rgb: np.ndarray, path: Path, layout_name: str) -> np.ndarray:
    """Invert the PASCAL VOC colour map (class c ↔ bit-spread colour; 255 ↔ (224, 224, 192))."""
    from segdeploy.engine.writers import voc_palette

    palette = np.asarray(voc_palette(256), dtype=np.int64).reshape(256, 3)
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    lookup = {int((r << 16) | (g << 8) | b): i for i, (r, g, b) in enumerate(palette)}
    uniq, inverse = np.unique(code, return_inverse=True)
    unknown = [u for u in uniq.tolist() if u not in lookup]
    if unknown:
        shown = [f"({u >> 16}, {(u >> 8) & 255}, {u & 255})" for u in unknown[:5]]
        raise DatasetError(
            f"{layout_name}: RGB mask {path} has {len(unknown)} colour(s) outside the VOC colour map: {', '.join(shown)}; "
            "use the palette PNGs as distributed"
        )
    return np.asarray([lookup[u] for u in uniq.tolist()], dtype=np.uint8)[inverse.reshape(code.shape)]
