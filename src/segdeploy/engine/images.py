"""Robust image reading: any common format, mode and bit depth to an RGB uint8 array as displayed.

The returned array is what a person sees in an image viewer: EXIF orientation applied, palette and
grayscale expanded, 16-bit scaled to 8 bits, CMYK converted, alpha composited on nothing (dropped).

Memory: :func:`load_image` reads the header first, refuses images above a pixel limit, and when the
caller says how large the image needs to be (``fit``), decodes a JPEG at a reduced scale
(``draft``), decodes a large 8-bit PNG strip by strip, box-reducing each strip as it comes
(:mod:`segdeploy.engine.png_strips`), and reduces other formats as early as Pillow allows, so a
144-megapixel PNG never becomes a 576 MB decoded image plus copies. Size and EXIF orientation come
from the header (for a PNG, from its eXIf chunk) before any pixel is decoded.
"""

from __future__ import annotations

import io
import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segdeploy.core.errors import ImageReadError

#: Default largest image accepted, in pixels (width × height). Pillow warns at 89 MP and refuses
#: at 179 MP; 12000 × 12000 scans (144 MP) are real inputs, so segdeploy's own limit is higher and
#: its message names the option that raises it.
DEFAULT_MAX_PIXELS = 250_000_000

#: Option that raises the pixel limit (named in the error message).
MAX_PIXELS_OPTION = "--max-pixels"

STDIN = "-"


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale an integer or float array of any bit depth to uint8 by its type's full range."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        # PIL gives 16-bit PNGs as int32 ('I') or uint16 ('I;16'): the range is 16 bits either way.
        peak = 65535 if array.max(initial=0) > 255 or array.dtype in (np.uint16, np.int32) else 255
        scaled = array.astype(np.float32) * np.float32(255.0 / peak)
        return np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    scaled = array.astype(np.float32)
    if scaled.max(initial=0) <= 1.0:
        scaled = scaled * 255.0
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _check_regular_file(path: Path) -> None:
    """Refuse what is not a readable regular file, with the reason a user can act on."""
    try:
        info = os.stat(path)
    except OSError as exc:
        if os.path.islink(path):
            reason = "symbolic link loop" if exc.errno == 40 else "dangling symbolic link (its target does not exist)"
            raise ImageReadError(path, reason) from None
        raise ImageReadError(path, f"cannot access file ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageReadError(path, "is a folder, not an image file")
    if not stat.S_ISREG(info.st_mode):
        kind = "FIFO (named pipe)" if stat.S_ISFIFO(info.st_mode) else \
            "socket" if stat.S_ISSOCK(info.st_mode) else "device or special file"
        raise ImageReadError(path, f"not a regular file: {kind}")
    if info.st_size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")


def _open_lazy(source, name):
    """Image.open (header only) with segdeploy's errors."""
    from PIL import Image, UnidentifiedImageError

    # segdeploy checks its own pixel limit (max_pixels, named in its message) from the header,
    # before decoding; Pillow's fixed 89 MP warning / 179 MP refusal would pre-empt it.
    Image.MAX_IMAGE_PIXELS = None

    try:
        return Image.open(source)
    except UnidentifiedImageError:
        raise ImageReadError(name, "not an image file Pillow can identify (wrong extension or corrupt)") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(name, f"image too large ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(name, f"corrupt or truncated image ({exc})") from exc


def _png_exif_chunk(img) -> bytes | None:
    """The eXIf chunk of a PNG found anywhere in the file, by walking chunk headers (no pixel data
    is read or inflated): a PNG may place eXIf after its image data, where Pillow finds it only by
    decoding the whole image."""
    import struct

    fp = getattr(img, "fp", None)
    if fp is None:
        return None
    here = fp.tell()
    try:
        fp.seek(8)  # after the signature
        while True:
            header = fp.read(8)
            if len(header) < 8:
                return None
            length, kind = struct.unpack(">I4s", header)
            if kind == b"eXIf":
                return fp.read(length)
            if kind == b"IEND":
                return None
            fp.seek(length + 4, os.SEEK_CUR)  # data and CRC
    except (OSError, struct.error):
        return None
    finally:
        fp.seek(here)


def _orientation(img) -> int:
    """EXIF orientation (1..8) from the header or the EXIF block, never by decoding pixels.

    Pillow's ``PngImageFile.getexif`` loads the whole image when the header holds no EXIF; a
    74-byte PNG that claims 100000x100000 would then take 10 GB before its size is checked.
    """
    from PIL import Image

    try:
        if img.format == "PNG":
            exif = Image.Exif()
            data = img.info.get("exif") or _png_exif_chunk(img)
            if data:
                exif.load(data)
            elif "Raw profile type exif" in img.info or "XML:com.adobe.xmp" in img.info or "xmp" in img.info:
                return int(Image.Image.getexif(img).get(0x0112, 1) or 1)  # text chunks, already read
            return int(exif.get(0x0112, 1) or 1)
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # a broken EXIF block must not make a good image unreadable
        return 1


def _displayed_size(img) -> tuple[int, int]:
    """(width, height) after EXIF orientation, from the header only."""
    width, height = img.size
    return (height, width) if _orientation(img) in (5, 6, 7, 8) else (width, height)


def _png_reduced_in_strips(img, fit, size: tuple[int, int]):
    """A large PNG decoded strip by strip and box-reduced as :meth:`InputPolicy.reduce_pil` would
    reduce it whole (same pixels), or None where that path does not apply (see engine.png_strips)."""
    from segdeploy.engine.png_strips import can_decode_in_strips, decode_reduced
    from segdeploy.engine.transforms import working_mode

    width, height = size
    if img.format != "PNG" or img.size != size or _orientation(img) != 1:
        return None
    target_w, target_h = fit(width, height)
    factor = min(width // target_w, height // target_h)
    # reduce_pil reduces once by this factor, then resizes; a second reduce must not follow
    once = min(-(-width // factor) // target_w, -(-height // factor) // target_h) < 2 if factor else False
    if factor < 2 or not once or not can_decode_in_strips(img):
        return None
    return decode_reduced(img, factor, working_mode)


def _decode(path, *, max_pixels: int | None, fit):
    """Open, check the pixel limit, decode (reduced when ``fit`` allows), apply EXIF orientation.

    Returns the decoded PIL image and the (width, height) of the image as displayed at full size.
    """
    from PIL import Image, ImageOps

    name = path
    if isinstance(path, (bytes, bytearray)):
        source, name = io.BytesIO(path), "<stdin>"
    else:
        path = Path(path)
        _check_regular_file(path)
        source = path
    img = _open_lazy(source, name)
    try:
        width, height = _displayed_size(img)
        if max_pixels and width * height > max_pixels:
            raise ImageReadError(name, f"image of {width}x{height} = {width * height:,} pixels exceeds the limit of "
                                 f"{max_pixels:,} pixels; raise it with {MAX_PIXELS_OPTION} N (0 = no limit) if this "
                                 "machine has the memory")
        reduced = _png_reduced_in_strips(img, fit, (width, height)) if fit is not None else None
        if reduced is not None:
            return reduced, (width, height)
        if fit is not None and img.format == "JPEG":
            need_w, need_h = fit(width, height)
            if (need_w, need_h) != (width, height):
                # draft() works in stored orientation; swap when EXIF rotates by 90°.
                swap = (width, height) != img.size
                img.draft(img.mode, (need_h, need_w) if swap else (need_w, need_h))
        img.load()  # decode now: truncated files fail here, not later in a worker
        if (width, height) != img.size or _orientation(img) != 1:
            img = ImageOps.exif_transpose(img)  # (it copies even when there is nothing to turn)
        return img, (width, height)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(name, f"image too large ({exc}); raise the limit with {MAX_PIXELS_OPTION}") from exc
    except (OSError, SyntaxError, ValueError, zlib.error) as exc:
        raise ImageReadError(name, f"corrupt or truncated image ({exc})") from exc
    except MemoryError:
        raise ImageReadError(name, "not enough memory to decode this image; lower --max-pixels or free memory") from None


def header_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file as displayed, read from its header: no pixel is decoded.

    Raises:
        ImageReadError: not a regular file, not an image, or a corrupt header.
    """
    path = Path(path)
    _check_regular_file(path)
    with _open_lazy(path, path) as img:
        return _displayed_size(img)


#: Images above this many pixels hand their freed buffers back to the system once decoded.
LARGE_IMAGE_PIXELS = 1 << 24


def return_freed_memory() -> None:
    """Give freed heap memory back to the system (glibc's ``malloc_trim``; elsewhere nothing).

    glibc serves allocations under its moving mmap threshold (up to 32 MB) from per-thread heaps
    and keeps what is freed there: decoding one 144-megapixel PNG in 16 MB strips left about 300 MB
    resident that the next stage could not reuse (benchmarks/big_image_rss.py measured 1,277 MiB
    peak before, 982 MiB after). One call per large image costs a few milliseconds.
    """
    global _malloc_trim
    if _malloc_trim is None:
        _malloc_trim = _find_malloc_trim()
    _malloc_trim()


def _find_malloc_trim():
    import ctypes
    import ctypes.util

    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


_malloc_trim = None


def open_image(path: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, fit=None):
    """Open with Pillow, check the pixel limit, fully decode, and apply EXIF orientation.

    Args:
        fit: ``(width, height) -> (min_width, min_height)``: the smallest decoded size the caller
            needs for an image of this displayed size, or None for full resolution. JPEGs are then
            decoded at the smallest libjpeg scale (1/2, 1/4, 1/8) that still covers it.
    Raises:
        ImageReadError: the message names the file and the reason.
    """
    return _decode(path, max_pixels=max_pixels, fit=fit)[0]


def pil_to_rgb(img, name) -> np.ndarray:
    """An opened PIL image (any mode) as a writable HxWx3 uint8 RGB array; ``name`` for errors."""
    if img.mode == "RGB":
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
            raise ImageReadError(name, f"unsupported image mode {img.mode!r}") from exc
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        array = array[:, :, :3]
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError(name, f"unexpected decoded shape {array.shape}")
    array = np.ascontiguousarray(array, dtype=np.uint8)
    # Pillow hands out read-only buffers; callers (and C extensions such as the dense CRF) may write.
    return array if array.flags.writeable else array.copy()


def read_image(path: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 RGB array in displayed orientation, at full size.

    Handles JPEG/PNG/BMP/TIFF/WebP; modes 1, L, LA, P, PA, RGB, RGBA, CMYK, YCbCr, I, I;16, F.
    Alpha is dropped (the colour channels are kept as stored), as upstream loaders that call
    ``convert('RGB')`` or ``cv2.imread`` do. ``path`` may also be the bytes of an encoded image.

    Raises:
        ImageReadError: empty, truncated, unidentifiable, unreadable, not a regular file, or more
            than ``max_pixels`` pixels (message names the file and the reason).
    """
    name = "<stdin>" if isinstance(path, (bytes, bytearray)) else path
    return pil_to_rgb(open_image(path, max_pixels=max_pixels), name)


@dataclass
class LoadedImage:
    """An image prepared for one model: ``pixels`` may be smaller than the image as displayed.

    Attributes:
        pixels: HxWx3 uint8 RGB, the working copy the network input is made from.
        original_hw: (H, W) of the image as displayed: the size masks are written at.
        reduced: True when ``pixels`` is smaller than ``original_hw``.
    """

    pixels: np.ndarray
    original_hw: tuple[int, int]

    @property
    def reduced(self) -> bool:
        return tuple(self.pixels.shape[:2]) != tuple(self.original_hw)


def load_image(path, policy=None, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read an image for a model, holding no more pixels than the model's input policy needs.

    Args:
        path: a file path, or the bytes of an encoded image (stdin).
        policy: a :class:`segdeploy.engine.transforms.InputPolicy` (None: full resolution).
    Raises:
        ImageReadError: as :func:`read_image`.
    """
    name = "<stdin>" if isinstance(path, (bytes, bytearray)) else path
    fit = policy.working_size if policy is not None else None
    img, (width, height) = _decode(path, max_pixels=max_pixels, fit=fit)
    if policy is not None:
        img = policy.reduce_pil(img, (width, height))
    return LoadedImage(pil_to_rgb(img, name), (height, width))
