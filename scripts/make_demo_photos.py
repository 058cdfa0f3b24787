#!/usr/bin/env python
"""Make the bundled demo photos (src/segdeploy/assets/photos/) from scikit-image's sample data.

Every photo comes from the ``skimage/data/`` directory inside the installed scikit-image wheel and
is one whose licence note (the docstring of its loader in ``skimage/data/_fetchers.py``) says
public domain or CC0. Each source file is checked against the sha256 that scikit-image's own data
registry lists for it, scaled (Lanczos) so that its long side is at most 640 px, and re-encoded as
baseline JPEG quality 90 without metadata. ``photos.json`` and ``CREDITS.md`` are written next to
the photos.

Usage::

    python scripts/make_demo_photos.py [-o src/segdeploy/assets/photos]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "src" / "segdeploy" / "assets" / "photos"
LONG_SIDE = 640
JPEG_QUALITY = 90

#: file written, skimage source file, and the facts from its licence note in skimage/data/_fetchers.py.
PHOTOS = [
    {
        "file": "astronaut.jpg", "source": "astronaut.png", "subject": True,
        "title": "Astronaut Eileen Collins (portrait)",
        "author": "NASA",
        "origin": "NASA Great Images database (https://flic.kr/p/r9qvLn)",
        "licence": "Public domain",
        "licence_note": "No known copyright restrictions, released into the public domain.",
    },
    {
        "file": "chelsea.jpg", "source": "chelsea.png", "subject": True,
        "title": "Chelsea the cat",
        "author": "Stefan van der Walt",
        "origin": None,
        "licence": "CC0",
        "licence_note": "No copyright restrictions.  CC0 by the photographer (Stefan van der Walt).",
    },
    {
        "file": "coffee.jpg", "source": "coffee.png", "subject": True,
        "title": "Coffee cup (courtesy of Pikolo Espresso Bar)",
        "author": "Rachel Michetti",
        "origin": None,
        "licence": "CC0",
        "licence_note": "No copyright restrictions.  CC0 by the photographer (Rachel Michetti).",
    },
    {
        "file": "camera.jpg", "source": "camera.png", "subject": True,
        "title": "Cameraman (grayscale)",
        "author": "Lav Varshney",
        "origin": None,
        "licence": "CC0",
        "licence_note": "No copyright restrictions. CC0 by the photographer (Lav Varshney).",
    },
    {
        "file": "hubble_deep_field.jpg", "source": "hubble_deep_field.jpg", "subject": False,
        "title": "Hubble eXtreme Deep Field (no single salient subject)",
        "author": "NASA",
        "origin": "HubbleSite (http://hubblesite.org/newscenter/archive/releases/2012/37/image/a/)",
        "licence": "Public domain",
        "licence_note": "The image was captured by NASA and may be freely used in the public domain.",
    },
]


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def skimage_data_dir() -> tuple[Path, str, dict[str, str]]:
    """The installed scikit-image's data directory, its version, and its registry's sha256 table."""
    import skimage
    from skimage.data._registry import registry

    return Path(skimage.__file__).resolve().parent / "data", skimage.__version__, dict(registry)


def convert_one(data: bytes) -> tuple[bytes, tuple[int, int], tuple[int, int], str]:
    """Source bytes → (JPEG bytes, source (W, H), output (W, H), mode). Grayscale stays grayscale."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img.load()
        mode = "L" if img.mode in ("L", "I;16", "I") else "RGB"
        img = img.convert(mode)
        src_size = img.size
        scale = LONG_SIDE / max(img.size)
        if scale < 1:
            new = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
            img = img.resize(new, resample=Image.Resampling.LANCZOS)
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False)
        return out.getvalue(), src_size, img.size, mode


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _pillow_version() -> str:
    import PIL

    return PIL.__version__


def _credit_line(row: dict) -> str:
    origin = f", first published at {row['origin']}" if row["origin"] else ""
    return f"{row['author']}{origin}; from the scikit-image sample data"


def _credits(rows: list[dict], skimage_version: str) -> str:
    lines = [
        "# Bundled demo photos: credits and licences",
        "",
        "Real photographs for demos and tests, all public domain or CC0. They were taken from the",
        f"sample-data directory `skimage/data/` shipped inside the scikit-image {skimage_version} wheel",
        "(scikit-image's code is BSD-3-Clause; each image carries its own licence, quoted below (links dropped) from",
        "the docstring of its loader in `skimage/data/_fetchers.py`). Each source file was checked",
        "against the sha256 in scikit-image's data registry (`skimage/data/_registry.py`).",
        "",
        f"What changed: scaled with Lanczos so that the long side is at most {LONG_SIDE} px (only",
        f"`hubble_deep_field` was larger), and re-encoded as baseline JPEG quality {JPEG_QUALITY}",
        "without metadata. Grayscale sources stay grayscale JPEGs. Nothing else was edited.",
        f"Regenerate with `python scripts/make_demo_photos.py` (these bytes: Pillow {_pillow_version()};",
        "another Pillow/libjpeg build may encode slightly different bytes of the same pictures).",
        "",
        "| file | title | source (skimage/data) | origin | author | licence | licence note | size |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| `{row['file']}` | {row['title']} | `{row['source']}` (sha256 {row['source_sha256'][:12]}…) "
            f"| {row['origin'] or 'scikit-image sample data'} | {row['author']} | {row['licence']} | {row['licence_note']} "
            f"| {row['src_size'][0]}×{row['src_size'][1]} → {row['size'][0]}×{row['size'][1]} {row['mode']} |")
    lines += [
        "",
        "`photos.json` lists the same files for programs: `file`, `subject` (true when the photo has",
        "one clear salient subject; `hubble_deep_field.jpg` has none), `title`, `credit`, `licence`.",
        "",
    ]
    return "\n".join(lines)


def make_photos(out_dir: str | os.PathLike = DEFAULT_OUT) -> list[dict]:
    """Write the photos, photos.json and CREDITS.md into ``out_dir``; return one row per photo."""
    data_dir, version, registry = skimage_data_dir()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for entry in PHOTOS:
        source = data_dir / entry["source"]
        data = source.read_bytes()
        digest = _sha256_bytes(data)
        expected = registry.get(f"data/{entry['source']}")
        if expected is not None and digest != expected:
            raise SystemExit(f"{source}: sha256 {digest} differs from scikit-image's registry ({expected})")
        jpeg, src_size, size, mode = convert_one(data)
        _atomic_write(out_dir / entry["file"], jpeg)
        rows.append({**entry, "source_sha256": digest, "src_size": src_size, "size": size, "mode": mode,
                     "sha256": _sha256_bytes(jpeg)})
    listing = [{"file": r["file"], "subject": r["subject"], "title": r["title"],
                "credit": _credit_line(r),
                "licence": r["licence"]} for r in rows]
    _atomic_write(out_dir / "photos.json", (json.dumps(listing, indent=2, ensure_ascii=False) + "\n").encode())
    _atomic_write(out_dir / "CREDITS.md", _credits(rows, version).encode())
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT, help="folder to write (default %(default)s)")
    args = parser.parse_args(argv)
    for row in make_photos(args.output):
        print(f"{row['file']:24s} {row['src_size'][0]}x{row['src_size'][1]} -> {row['size'][0]}x{row['size'][1]} "
              f"{row['mode']:3s} {row['licence']:13s} sha256 {row['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
