"""Request bodies to RGB arrays, with the same rules as :func:`segdeploy.engine.images.read_image`.

The server never touches the file system or the network for an image: the bytes of the request
are all it reads. Two checks run before any pixel is decoded, on the header alone:

* the pixel limit (width x height) against decompression bombs — a 50 kB PNG can declare
  50 000 x 50 000 pixels (7.5 GB as RGB); it is refused with :class:`ImageTooLarge` (HTTP 413);
* Pillow's own bomb guard (``Image.DecompressionBombError``), reported the same way.

Everything else (EXIF orientation, palette / grayscale / 16-bit / CMYK / alpha handling) follows
``read_image`` so that a mask served for an upload equals the mask ``segdeploy predict`` writes
for the same file.
"""

from __future__ import annotations

import io

import numpy as np

from segdeploy.core.errors import ImageReadError, SegdeployError
from segdeploy.engine.images import pil_to_rgb


class ImageTooLarge(SegdeployError):
    """The image declares more pixels than the server's limit (HTTP 413)."""

    def __init__(self, name: str, pixels: int, limit: int):
        super().__init__(f"{name}: image has {pixels} pixels, more than this server's limit of {limit} "
                         "(--max-pixels); downscale it before sending")
        self.pixels = pixels
        self.limit = limit


def _open(data: bytes, name: str, max_pixels: int):
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ImageReadError(name, "empty body (0 bytes); send the image file as the request body or as "
                                   "multipart field 'file'")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageReadError(name, "not an image Pillow can identify (corrupt, or not JPEG/PNG/WebP/BMP/TIFF)") from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(name, -1, max_pixels) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(name, f"corrupt or truncated image header ({exc})") from exc
    width, height = img.size
    if width * height > max_pixels:  # header only so far: nothing large has been allocated
        img.close()
        raise ImageTooLarge(name, width * height, max_pixels)
    try:
        with img:
            img.load()  # decode now: a truncated body fails here, with its reason
            return ImageOps.exif_transpose(img)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(name, width * height, max_pixels) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(name, f"corrupt or truncated image ({exc})") from exc


def image_from_bytes(data: bytes, name: str = "upload", max_pixels: int = 40_000_000) -> np.ndarray:
    """Decode an encoded image to an HxWx3 uint8 RGB array in displayed orientation.

    Args:
        data: the encoded file (JPEG, PNG, WebP, BMP, TIFF ...).
        name: how error messages name the input (the upload's file name).
        max_pixels: refuse images with more than this many pixels (width x height).

    Raises:
        ImageReadError: empty, unidentifiable, truncated or undecodable (HTTP 400).
        ImageTooLarge: over ``max_pixels`` (HTTP 413).
    """
    img = _open(data, name, max_pixels)
    # The same mode handling as files get (engine.images), so uploads and files decode alike.
    return pil_to_rgb(img, name)
