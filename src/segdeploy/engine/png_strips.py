"""Decode a large PNG strip by strip, box-reducing each strip as it comes, so that a 144-megapixel
PNG never exists in memory at full size (Pillow has no reduced decoding for PNG, as ``draft`` is for
JPEG; decoding it whole takes 4 bytes per pixel: 576 MB).

How: the PNG's zlib stream is inflated incrementally; each strip of rows is handed to Pillow as a
small PNG of its own, preceded by the last row of the previous strip stored unfiltered (PNG filter
type 0), so that rows filtered against the row above (Up, Average, Paeth) decode exactly. Each
strip is then brought to the working mode and reduced with :meth:`PIL.Image.Image.reduce`; strips
start at multiples of the reduction factor, so the result is identical, bit for bit, to reducing
the whole decoded image.

Peak memory: one strip of about :data:`STRIP_PIXELS` pixels at 4 bytes each, its raw rows, plus the
reduced image. Handled: non-interlaced PNGs of 8 bits per sample (gray, RGB, palette, gray+alpha,
RGBA); others are decoded whole, as before.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Callable, Iterator

#: Pixels decoded at once (per strip): 4 M pixels = 16 MB in Pillow's 4-byte layout.
STRIP_PIXELS = 4_000_000

_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # samples per pixel per PNG colour type (8-bit only here)
_RAWMODE = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}


def _chunks(fp) -> Iterator[tuple[bytes, bytes]]:
    """(type, data) of each chunk after the signature, CRCs checked."""
    fp.seek(8)
    while True:
        header = fp.read(8)
        if len(header) < 8:
            raise ValueError("truncated PNG (no IEND chunk)")
        length, kind = struct.unpack(">I4s", header)
        data = fp.read(length)
        crc = fp.read(4)
        if len(data) < length or len(crc) < 4:
            raise ValueError(f"truncated PNG ({kind.decode('latin-1')} chunk cut short)")
        if struct.unpack(">I", crc)[0] != zlib.crc32(kind + data):
            raise ValueError(f"broken PNG ({kind.decode('latin-1')} chunk fails its CRC)")
        yield kind, data
        if kind == b"IEND":
            return


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def can_decode_in_strips(img) -> bool:
    """True for a PNG this module decodes strip by strip (8 bits per sample, not interlaced)."""
    fp = getattr(img, "fp", None)
    if img.format != "PNG" or fp is None:
        return False
    here = fp.tell()
    try:
        fp.seek(16)
        _w, _h, depth, colour, _c, _f, interlace = struct.unpack(">IIBBBBB", fp.read(13))
    except (OSError, struct.error):
        return False
    finally:
        fp.seek(here)
    return depth == 8 and colour in _SAMPLES and interlace == 0


def decode_reduced(img, factor: int, working_mode: Callable) -> object:
    """The PNG behind ``img`` (opened, not loaded) decoded strip by strip, each strip converted by
    ``working_mode`` and reduced by ``factor``: equal to ``working_mode(full).reduce(factor)``.

    Raises:
        ValueError, OSError, zlib.error: corrupt or truncated file.
    """
    from PIL import Image

    fp = img.fp
    here = fp.tell()
    try:
        return _decode(fp, factor, working_mode, Image)
    finally:
        fp.seek(here)


def _decode(fp, factor: int, working_mode: Callable, Image):
    header, keep, pieces = None, [], []
    chunks = _chunks(fp)
    for kind, data in chunks:
        if kind == b"IHDR":
            header = data
        elif kind in (b"PLTE", b"tRNS"):
            keep.append(_chunk(kind, data))
        elif kind == b"IDAT":
            pieces.append(data)
            break
    if header is None or not pieces:
        raise ValueError("PNG without IHDR or image data")
    width, height, _depth, colour = struct.unpack(">IIBB", header[:10])
    row_bytes = 1 + width * _SAMPLES[colour]
    rows_per_strip = factor * max(1, STRIP_PIXELS // (width * factor))
    out_size = (-(-width // factor), -(-height // factor))
    result = None
    previous = b""  # the previous strip's last row, unfiltered
    inflater = zlib.decompressobj()
    buffered = bytearray()

    def more_idat() -> Iterator[bytes]:
        yield pieces[0]
        for kind, data in chunks:
            if kind == b"IDAT":
                yield data
            elif kind == b"IEND":
                return

    source = more_idat()
    for top in range(0, height, rows_per_strip):
        rows = min(rows_per_strip, height - top)
        need = rows * row_bytes
        while len(buffered) < need:
            data = inflater.unconsumed_tail or next(source, None)
            if data is None:
                raise ValueError(f"truncated PNG image data (row {top + len(buffered) // row_bytes} of {height})")
            buffered += inflater.decompress(data, max(need - len(buffered), 1 << 16))
        raw = bytes(buffered[:need])
        del buffered[:need]
        lead = b"\x00" + previous if previous else b""
        strip_png = (b"\x89PNG\r\n\x1a\n"
                     + _chunk(b"IHDR", struct.pack(">II", width, rows + (1 if previous else 0)) + header[8:])
                     + b"".join(keep) + _chunk(b"IDAT", zlib.compress(lead + raw, 0)) + _chunk(b"IEND", b""))
        with Image.open(io.BytesIO(strip_png)) as strip:
            strip.load()
            if previous:
                decoded = strip.crop((0, 1, width, rows + 1))
            else:
                decoded = strip.copy()
        previous = decoded.crop((0, rows - 1, width, rows)).tobytes("raw", _RAWMODE[colour])
        reduced = working_mode(decoded).reduce(factor)
        del decoded
        if result is None:
            result = Image.new(reduced.mode, out_size)
        result.paste(reduced, (0, top // factor))
    return result
