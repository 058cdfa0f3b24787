"""Decoding a dataset's files: input images through :mod:`segdeploy.engine.images`, ground-truth
masks through Pillow into the encodings ``Layout.mask_encoding`` names (gray, binary, class ids).

Decoding rules (palette indices, bit depths, the VOC colour
map) change independently of how a layout finds and pairs its files.
Pillow is imported only when a mask is read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segdeploy.core.errors import DatasetError


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
    from segdeploy.tasks import voc_palette

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
