"""Generators of awkward image files for reader and predict tests (written into tmp_path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A photo-like RGB uint8 image: smooth gradients, a bright disc and mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack([xx / max(width - 1, 1), yy / max(height - 1, 1), 0.5 + 0.5 * np.sin(xx / 7 + yy / 11)], -1)
    disc = ((yy - height * 0.55) ** 2 + (xx - width * 0.45) ** 2) < (min(height, width) * 0.3) ** 2
    base[disc] = base[disc] * 0.3 + 0.7
    noisy = base * 255 + rng.normal(0, 6, base.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def exif_rotated_jpeg(path: Path, height: int = 30, width: int = 50) -> tuple[int, int]:
    """A JPEG stored as height x width with EXIF orientation 6 (displayed rotated 90° clockwise).

    Returns the displayed (height, width) = (width, height) of the stored pixels.
    """
    img = Image.fromarray(photo(height, width, seed=5))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, format="JPEG", exif=exif.tobytes())
    return width, height


def make_mixed_folder(root: Path) -> dict[str, object]:
    """A folder of good and bad inputs. Returns {"good": {relpath: displayed (H, W)}, "bad": [relpaths]}."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub").mkdir(exist_ok=True)
    good: dict[str, tuple[int, int]] = {}

    Image.fromarray(photo(48, 64, 1)).save(root / "plain.jpg", quality=92)
    good["plain.jpg"] = (48, 64)
    Image.fromarray(photo(33, 41, 2)).save(root / "sub" / "naïve 图像.png")
    good["sub/naïve 图像.png"] = (33, 41)
    sixteen = (photo(20, 30, 3)[:, :, 0].astype(np.uint16) * 257)
    Image.fromarray(sixteen).save(root / "depth16.png")
    good["depth16.png"] = (20, 30)
    rgba = np.dstack([photo(25, 35, 4), np.full((25, 35), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(root / "alpha.png")
    good["alpha.png"] = (25, 35)
    Image.fromarray(photo(22, 26, 6)).convert("CMYK").save(root / "cmyk.jpg")
    good["cmyk.jpg"] = (22, 26)
    Image.fromarray(np.array([[[200, 10, 10]]], np.uint8)).save(root / "one.png")
    good["one.png"] = (1, 1)
    good["rotated.jpg"] = exif_rotated_jpeg(root / "rotated.jpg")
    Image.fromarray(photo(18, 24, 7)).convert("P").save(root / "palette.bmp")
    good["palette.bmp"] = (18, 24)

    full = root / "plain.jpg"
    (root / "truncated.jpg").write_bytes(full.read_bytes()[: len(full.read_bytes()) // 3])
    (root / "notes.png").write_text("this is not a picture\n")
    (root / "empty.jpg").write_bytes(b"")
    bad = ["truncated.jpg", "notes.png", "empty.jpg"]
    return {"good": good, "bad": bad}
