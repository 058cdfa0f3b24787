"""Admission by memory: every request reserves what its image will take once decoded, before a
pixel is decoded, against one budget (``--max-inflight-bytes``).

Counting requests (``--max-queue``) bounds work, not memory: 80 small PNGs declaring 6000 x 6000
pixels each pass every per-request limit and together decode to tens of gigabytes. The size and
mode are in the header, so :func:`decoded_cost` prices a request from ``Image.open`` alone, and
:class:`MemoryBudget` admits it only while the sum of admitted prices stays within the budget;
otherwise the answer is 503 + Retry-After. A reservation is released when its request finishes,
whatever the outcome.
"""

from __future__ import annotations

import io
import os
import threading

from segdeploy.core.errors import ImageReadError, SegdeployError

#: the default budget: this share of the memory available when the server starts
DEFAULT_SHARE = 0.25

#: bytes per image pixel a request holds at its peak besides the decoded image and a rotated copy
#: of it: the RGB array (3), the float32 map at the original size (4), the mask or cut-out and the
#: encoder's buffers, or for ``?output=prob`` the .npy copy of the map (4 + 4), and what the
#: allocator keeps of them: an RGB image is priced at 24 bytes per pixel (2 x 4 + 16). Measured
#: (benchmarks/results/serve_memory_cpu.md): two 36-megapixel PNGs in flight grew the server's
#: RSS by 22 bytes per pixel each.
PER_PIXEL_WORK = 16


class OverBudget(SegdeployError):
    """Admitting this request would exceed the in-flight memory budget (HTTP 503)."""

    def __init__(self, needed: int, in_use: int, budget: int):
        super().__init__(f"server memory budget in use: this image needs ~{needed / 1e6:.0f} MB decoded, "
                         f"{in_use / 1e6:.0f} of {budget / 1e6:.0f} MB are reserved by requests in flight "
                         "(--max-inflight-bytes)")
        self.needed, self.in_use, self.budget = needed, in_use, budget


class NeverFits(SegdeployError):
    """This image alone needs more than the whole budget (HTTP 413: retrying cannot help)."""


def _bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow stores per pixel of ``mode`` once decoded: 1 for 1 / L / P, 2 for 16-bit
    gray, else 4 (multi-band 8-bit images are stored four bytes wide, RGB as RGBX)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def decoded_cost(data: bytes, name: str, max_pixels: int) -> int:
    """Bytes a request for this encoded image holds at its peak, from the header alone.

    Raises:
        ImageReadError: no image Pillow can identify (HTTP 400; nothing was reserved).
        ImageTooLarge: the header declares more than ``max_pixels`` (HTTP 413).
    """
    from PIL import Image, UnidentifiedImageError

    from segdeploy.serve.imaging import ImageTooLarge

    if not data:
        raise ImageReadError(name, "empty body (0 bytes); send the image file as the request body or as "
                                   "multipart field 'file'")

    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header; no pixel is decoded
            width, height = img.size
            mode = img.mode
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(name, -1, max_pixels) from exc
    except UnidentifiedImageError:
        raise ImageReadError(name, "not an image Pillow can identify (corrupt, or not JPEG/PNG/WebP/BMP/TIFF)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(name, f"corrupt or truncated image header ({exc})") from exc
    pixels = int(width) * int(height)
    if pixels > max_pixels:
        raise ImageTooLarge(name, pixels, max_pixels)
    # the decoded image, possibly a rotated copy (EXIF orientation), then the work around it
    return len(data) + pixels * (2 * _bytes_per_pixel(mode) + PER_PIXEL_WORK)


def available_memory() -> int:
    """Bytes of memory available now (psutil; else /proc/meminfo via sysconf)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil is a dependency
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def default_budget(share: float = DEFAULT_SHARE, parts: int = 1) -> int:
    """:data:`DEFAULT_SHARE` of the available memory, split over ``parts`` (Ray replicas)."""
    return max(64 * 1024 * 1024, int(available_memory() * share) // max(1, int(parts)))


class MemoryBudget:
    """Reservations of in-flight bytes against ``limit``; thread-safe.

    >>> budget = MemoryBudget(1000)
    >>> with budget.reserve(600):
    ...     budget.in_use
    600
    """

    def __init__(self, limit: int):
        self.limit = int(limit)
        self.in_use = 0
        self.peak = 0
        self.refused = 0
        self._lock = threading.Lock()

    def reserve(self, nbytes: int) -> "_Reservation":
        """Reserve ``nbytes`` or raise :class:`OverBudget` (busy now) / :class:`NeverFits`."""
        nbytes = int(nbytes)
        if nbytes > self.limit:
            raise NeverFits(f"image needs ~{nbytes / 1e6:.0f} MB decoded, more than this server's whole memory "
                            f"budget of {self.limit / 1e6:.0f} MB (--max-inflight-bytes); downscale it")
        with self._lock:
            if self.in_use + nbytes > self.limit:
                self.refused += 1
                raise OverBudget(nbytes, self.in_use, self.limit)
            self.in_use += nbytes
            self.peak = max(self.peak, self.in_use)
        return _Reservation(self, nbytes)

    def _release(self, nbytes: int) -> None:
        with self._lock:
            self.in_use -= nbytes

    def public(self) -> dict[str, int]:
        return {"limit_bytes": self.limit, "in_use_bytes": self.in_use, "peak_bytes": self.peak,
                "refused": self.refused}


class _Reservation:
    def __init__(self, budget: MemoryBudget, nbytes: int):
        self.budget, self.nbytes = budget, nbytes

    def release(self) -> None:
        if self.nbytes:
            self.budget._release(self.nbytes)
            self.nbytes = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.release()
