"""Robust image reading: any common format, mode and bit depth to an RGB uint8 array as displayed.

The returned array is what a person sees in an image viewer: EXIF orientation applied, palette and
grayscale expanded, 16-bit scaled to 8 bits, CMYK converted, alpha composited on nothing (dropped).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


from segdeploy.core.errors import ImageReadError  # noqa: E402  (defined in core, raised here)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale an integer or float array of any bit depth to uint8 by its type's full range."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        # PIL gives 16-bit PNGs as int32 ('I') or uint16 ('I;16'): the range is 16 bits either way.
        peak = 65535 if array.max(initial=0) > 255 or array.dtype in (np.uint16, np.int32) else 255
        return np.clip(np.round(array.astype(np.float64) * (255.0 / peak)), 0, 255).astype(np.uint8)
    scaled = array.astype(np.float64)
    if scaled.max(initial=0) <= 1.0:
        scaled = scaled * 255.0
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def open_image(path: str | os.PathLike):
    """Open with Pillow, fully decode, and apply EXIF orientation. Raises ImageReadError."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageReadError(path, f"cannot access file ({exc.strerror or exc})") from exc
    if size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    try:
        with Image.open(path) as img:
            img.load()  # decode now: truncated files fail here, not later in a worker
            return ImageOps.exif_transpose(img)
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image file Pillow can identify (wrong extension or corrupt)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(path, f"corrupt or truncated image ({exc})") from exc
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"image too large ({exc})") from exc


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 RGB array in displayed orientation.

    Handles JPEG/PNG/BMP/TIFF/WebP; modes 1, L, LA, P, PA, RGB, RGBA, CMYK, YCbCr, I, I;16, F.
    Alpha is dropped (the colour channels are kept as stored), as upstream loaders that call
    ``convert('RGB')`` or ``cv2.imread`` do.

    Raises:
        ImageReadError: empty, truncated, unidentifiable or unreadable file (message names it).
    """
    img = open_image(path)
    if img.mode in ("RGB",):
        array = np.asarray(img)
    elif img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        gray = _to_uint8(np.asarray(img))
        array = np.repeat(gray[:, :, None], 3, axis=2)
    elif img.mode in ("RGBA", "RGBa", "LA", "La", "PA", "P", "L", "1", "CMYK", "YCbCr", "LAB", "HSV"):
        array = np.asarray(img.convert("RGB"))
    else:  # e.g. 16-bit RGB TIFF decoded by a plugin in an unusual mode
        try:
            array = _to_uint8(np.asarray(img))
        except Exception as exc:
            raise ImageReadError(path, f"unsupported image mode {img.mode!r}") from exc
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        array = array[:, :, :3]
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError(path, f"unexpected decoded shape {array.shape}")
    array = np.ascontiguousarray(array, dtype=np.uint8)
    # Pillow hands out read-only buffers; callers (and C extensions such as the dense CRF) may write.
    return array if array.flags.writeable else array.copy()


def find_images(inputs, recursive: bool = False) -> list[tuple[Path, Path]]:
    """Expand files, folders and glob patterns into (file, path relative to its input root) pairs.

    Files named explicitly are kept whatever their suffix (so a bad file is reported, not ignored);
    files found inside folders are kept when their suffix is an image suffix. Order is sorted per
    input and duplicates are dropped.
    """
    import glob

    found: list[tuple[Path, Path]] = []
    seen: set[Path] = set()

    def add(path: Path, rel: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append((path, rel))

    for item in inputs:
        item = str(item)
        path = Path(item)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            for child in sorted(path.glob(pattern)):
                if child.is_file() and child.suffix.lower() in IMAGE_SUFFIXES:
                    add(child, child.relative_to(path))
        elif path.is_file():
            add(path, Path(path.name))
        elif any(ch in item for ch in "*?["):
            for match in sorted(glob.glob(item, recursive=recursive)):
                match_path = Path(match)
                if match_path.is_file():
                    add(match_path, Path(match_path.name))
        else:
            raise FileNotFoundError(f"{item}: no such file, folder or matching pattern")
    return found
