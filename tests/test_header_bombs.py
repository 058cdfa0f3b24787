"""Sizes come from headers before any pixel is decoded (issue 23 item 1): a 74-byte PNG that claims
100000x100000, and a 30000x30000 1-bit one, are refused by name while the good image beside them
is written, in a child process under a memory limit whose peak RSS stays under 1 GiB."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from segdeploy.bench.peak_rss import run_measured
from segdeploy.engine.images import load_image

SRC = str(Path(__file__).resolve().parents[1] / "src")
GIB = 1 << 30

#: The child's data segment (heap and private mappings) is limited to this: an attempt to decode a
#: bomb fails there instead of taking the machine (runtimes reserve address space they never touch,
#: so RLIMIT_AS would stop the import of the backend, not the bomb).
DATA_LIMIT = 3 * GIB


def png_header_bomb(path: Path, width: int, height: int, bit_depth: int = 8, colour_type: int = 2) -> Path:
    """A PNG whose header claims ``width`` x ``height`` with almost no data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 8))
                     + chunk(b"IEND", b""))
    return path


def test_the_header_is_read_without_decoding(tmp_path):
    import resource

    bomb = png_header_bomb(tmp_path / "bomb.png", 100_000, 100_000)
    assert bomb.stat().st_size < 80
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        load_image(bomb)
    except Exception as exc:  # noqa: BLE001 - the message is what is checked
        message = str(exc)
    assert "100000x100000" in message and "--max-pixels" in message
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # KiB: nothing decoded


def test_the_memory_estimate_reads_a_huge_header_without_pillows_bomb_warning(tmp_path):
    """The pre-run estimate sizes a 144-megapixel file from its header with segdeploy's own limit:
    Pillow's 89-megapixel DecompressionBombWarning neither prints nor hides the file."""
    import warnings

    from segdeploy import get_spec
    from segdeploy.engine.transforms import InputPolicy
    from segdeploy.jobs.sizing import check_memory

    scan = png_header_bomb(tmp_path / "scan.png", 12_000, 12_000)
    spec = get_spec("u2netp")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        note = check_memory(spec, InputPolicy.for_model(spec), [scan], 250_000_000, budget=1)
    assert note and "scan.png" in note and "12000x12000" in note


def test_png_exif_orientation_after_the_image_data_is_still_applied(tmp_path):
    """Orientation read by walking chunk headers: an eXIf chunk after IDAT still turns the image."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(tmp_path / "a.png", exif=exif.tobytes())
    data = (tmp_path / "a.png").read_bytes()
    start = data.index(b"eXIf") - 4
    length = struct.unpack(">I", data[start:start + 4])[0]
    exif_chunk = data[start:start + 12 + length]
    rest = data[:start] + data[start + 12 + length:]
    iend = rest.index(b"IEND") - 4
    (tmp_path / "late.png").write_bytes(rest[:iend] + exif_chunk + rest[iend:])
    for name in ("a.png", "late.png"):
        assert load_image(tmp_path / name).original_hw == (40, 20), name


def test_bombs_beside_a_good_image_under_a_memory_limit(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    png_header_bomb(folder / "bomb.png", 100_000, 100_000)
    png_header_bomb(folder / "scan1bit.png", 30_000, 30_000, bit_depth=1, colour_type=0)
    Image.fromarray(np.full((60, 80, 3), 200, np.uint8)).save(folder / "good.png")
    # The ONNX export (about 1 GB while torch traces it) is made here, once, as any earlier run would
    # have made it: the child's peak is then the images' and the runtime's, which is what is judged.
    from segdeploy.convert.export_cache import cached_export

    cached_export("u2netp", "random")
    done = run_measured(["predict", "u2netp", folder, "-o", tmp_path / "out", "--weights", "random", "--backend",
                         "onnxruntime", "--quiet"], data_limit=DATA_LIMIT, env=dict(os.environ, PYTHONPATH=SRC),
                        timeout=600)
    rss = done.peak_rss_bytes
    assert done.returncode == 1, done.stderr  # some inputs failed, each named
    assert "bomb.png" in done.stderr and "100000x100000" in done.stderr
    assert "scan1bit.png" in done.stderr and "30000x30000" in done.stderr
    assert Image.open(tmp_path / "out" / "good.png").size == (80, 60)
    assert rss < GIB, f"peak RSS {rss / 2**20:.0f} MiB"
    assert "Traceback" not in done.stderr
