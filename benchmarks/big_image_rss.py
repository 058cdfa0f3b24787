"""Peak memory of `segdeploy predict` on huge and hostile images (issue 23 item 1).

Each case runs the real CLI in a fresh child process and reads its peak RSS (VmHWM of its own address space, :mod:`segdeploy.bench.peak_rss`):

* ``144mp_png``: a generated 12000 x 12000 RGB PNG, `predict u2netp` on the DEFAULT backend
  (``auto``) with the packaged trained weights: the configuration README's promise is about;
* ``144mp_1bit_png``: a 12000 x 12000 1-bit PNG (a scan; not strip-decodable, so decoded whole)
  with the same command: the input of ``tests/test_predict_bounds.py``;
* ``baseline``: the same command on one 320 x 240 PNG: what the runtime alone costs;
* ``header_bomb``: a 74-byte PNG whose header claims 100000 x 100000, beside a good image;
* ``1bit_30000``: a header claiming a 30000 x 30000 1-bit PNG;
* ``144mp_max_pixels_1m``: the 144-megapixel PNG with ``--max-pixels 1000000`` (refused).

The result file records the machine load, the versions and every number.

    python benchmarks/big_image_rss.py                 # writes benchmarks/results/big_image_rss_<date>.*
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, scratch_dir, write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SRC = str(Path(__file__).resolve().parents[1] / "src")
MIB = 1 << 20

MAKE_144MP = """
import sys
import numpy as np
from PIL import Image
side = 12000
y = np.linspace(0, 255, side, dtype=np.float32)[:, None]
x = np.linspace(0, 255, side, dtype=np.float32)[None, :]
image = np.empty((side, side, 3), np.uint8)
image[..., 0] = (y * 0.5 + x * 0.5).astype(np.uint8)
image[..., 1] = y.astype(np.uint8)
image[..., 2] = x.astype(np.uint8)
image[3000:9000, 3000:9000] = (240, 40, 40)
Image.fromarray(image).save(sys.argv[1], compress_level=1)
"""


def png_header_bomb(path: Path, width: int, height: int, bit_depth: int = 8, colour_type: int = 2) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 8))
                     + chunk(b"IEND", b""))
    return path


def run_case(folder: Path, *argv) -> dict:
    from segdeploy.bench.peak_rss import run_measured

    start = time.perf_counter()
    done = run_measured(list(argv), env=dict(os.environ, PYTHONPATH=SRC), timeout=3600)
    seconds = time.perf_counter() - start
    tail = [ln for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith("PEAK_RSS_KIB")][-3:]
    return {"argv": ["segdeploy", *map(str, argv)], "exit_code": done.returncode,
            "peak_rss_mib": round(done.peak_rss_bytes / 2**20), "seconds": round(seconds, 1), "stderr_tail": tail}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default=None)
    args = parser.parse_args(argv)

    import numpy as np
    from PIL import Image

    from segdeploy.core.environment import environment

    cases: dict[str, dict] = {}
    load_before = load_average()
    with scratch_dir() as tmp:
        tmp = Path(tmp)
        big = tmp / "big" / "scan144.png"
        big.parent.mkdir()
        subprocess.run([sys.executable, "-c", MAKE_144MP, str(big)], check=True)
        scan = tmp / "big1bit" / "scan1bit144.png"
        scan.parent.mkdir()
        pixels = np.zeros((12000, 12000), bool)
        pixels[3000:9000, 2000:10000] = True
        Image.fromarray(pixels).convert("1").save(scan, optimize=True)
        del pixels
        small = tmp / "small"
        small.mkdir()
        Image.new("RGB", (320, 240), (90, 120, 150)).save(small / "small.png")
        hostile = tmp / "hostile"
        hostile.mkdir()
        png_header_bomb(hostile / "bomb.png", 100_000, 100_000)
        png_header_bomb(hostile / "scan1bit.png", 30_000, 30_000, bit_depth=1, colour_type=0)
        Image.new("RGB", (80, 60), (200, 200, 200)).save(hostile / "good.png")

        cases["baseline"] = run_case(tmp, "predict", "u2netp", small, "-o", tmp / "out_small", "--quiet")
        cases["144mp_png"] = run_case(tmp, "predict", "u2netp", big, "-o", tmp / "out_big", "--quiet")
        Image.MAX_IMAGE_PIXELS = None  # the mask is as large as the input, on purpose
        cases["144mp_png"]["mask_size"] = list(Image.open(tmp / "out_big" / "scan144.png").size)
        cases["144mp_1bit_png"] = run_case(tmp, "predict", "u2netp", scan, "-o", tmp / "out_scan", "--quiet")
        cases["144mp_1bit_png"]["mask_size"] = list(Image.open(tmp / "out_scan" / "scan1bit144.png").size)
        cases["header_bomb_and_1bit_30000"] = run_case(tmp, "predict", "u2netp", hostile, "-o", tmp / "out_hostile",
                                                       "--quiet")
        cases["header_bomb_and_1bit_30000"]["good_written"] = (tmp / "out_hostile" / "good.png").exists()
        cases["144mp_max_pixels_1m"] = run_case(tmp, "predict", "u2netp", big, "-o", tmp / "out_refused",
                                                "--max-pixels", "1000000", "--quiet")
        big_size = big.stat().st_size

    payload = {"benchmark": "big_image_rss", "load_average_before": load_before, "load_average_after": load_average(),
               "png_144mp_bytes": big_size, "cases": cases, "environment": environment(),
               "note": "default backend (auto) with the packaged trained u2netp weights; peak RSS of the whole CLI "
                       "process (runtime included), from VmHWM of its own address space"}
    rows = "\n".join(f"| {name} | {case['exit_code']} | {case['peak_rss_mib']} | {case['seconds']} |"
                     for name, case in cases.items())
    markdown = (f"# Peak RSS of `segdeploy predict u2netp` (default backend, trained weights)\n\n"
                f"Load average before / after: {load_before} / {payload['load_average_after']}\n\n"
                "| case | exit | peak RSS (MiB) | seconds |\n| --- | --- | --- | --- |\n" + rows + "\n")
    json_path, md_path = write_results("big_image_rss", payload, markdown, args.out, args.tag)
    print(markdown)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
