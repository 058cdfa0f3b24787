"""A small, deterministic, photo-like image set with ground-truth masks, for ``segdeploy demo``.

Each image is a landscape-like scene (sky / ground gradient, a horizon, low-frequency texture and
grain, a few low-contrast distractor shapes) with one salient object in front: an ellipse, a star,
a rounded box or a blob of circles, filled with a saturated, shaded colour. The ground truth is
that object's silhouette. Edges are anti-aliased by 3x3 supersampling; the mask is the pixels the
object covers at least half of. Images are written as JPEG (quality 92) in ECSSD's layout::

    <root>/images/0001.jpg ...              <root>/ground_truth_mask/0001.png ...  (0/255 gray)

The same ``seed`` always gives the same files (numpy's PCG64 and Pillow's JPEG encoder are
deterministic), so the demo's numbers are reproducible run to run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: (height, width) cycled through: ECSSD-like sizes, landscape and portrait.
DEMO_SIZES = ((300, 400), (400, 300), (240, 360), (320, 320), (300, 450), (360, 270))
SHAPES = ("ellipse", "star", "box", "blob")
_SUPERSAMPLE = 3


@dataclass(frozen=True)
class DemoImage:
    """One generated sample: id, HxWx3 uint8 RGB image, HxW uint8 0/255 mask, the object's shape."""

    id: str
    image: np.ndarray
    mask: np.ndarray
    shape: str


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid bilinearly upsampled to HxW."""
    gh, gw = cells + 1, max(2, round(cells * w / h)) + 1
    grid = rng.uniform(-1.0, 1.0, size=(gh, gw))
    ys = np.linspace(0, gh - 1, h)
    xs = np.linspace(0, gw - 1, w)
    y0 = np.minimum(ys.astype(int), gh - 2)
    x0 = np.minimum(xs.astype(int), gw - 2)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _coverage(shape: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Fraction in [0, 1] of each pixel covered by one random object of ``shape`` (supersampled)."""
    s = _SUPERSAMPLE
    # Pixel-centre sample positions of an s x s grid inside every pixel, in pixel units.
    yy, xx = np.mgrid[0:h * s, 0:w * s].astype(np.float64)
    yy = (yy + 0.5) / s
    xx = (xx + 0.5) / s
    cy, cx = rng.uniform(0.4, 0.6) * h, rng.uniform(0.38, 0.62) * w
    size = rng.uniform(0.22, 0.32) * min(h, w)
    angle = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    ry = dy * np.cos(angle) - dx * np.sin(angle)
    rx = dy * np.sin(angle) + dx * np.cos(angle)
    if shape == "ellipse":
        a, b = size * rng.uniform(1.0, 1.4), size * rng.uniform(0.6, 0.9)
        inside = (rx / a) ** 2 + (ry / b) ** 2 <= 1.0
    elif shape == "star":
        points = int(rng.integers(5, 8))
        theta = np.arctan2(ry, rx)
        radius = size * (1.0 + 0.35 * np.cos(points * theta))
        inside = np.hypot(rx, ry) <= radius
    elif shape == "box":
        a, b = size * rng.uniform(0.9, 1.3), size * rng.uniform(0.6, 0.9)
        inside = np.abs(rx / a) ** 4 + np.abs(ry / b) ** 4 <= 1.0  # superellipse: a rounded box
    elif shape == "blob":
        inside = np.zeros_like(rx, dtype=bool)
        for _ in range(3):
            oy, ox = rng.uniform(-0.5, 0.5, size=2) * size
            r = size * rng.uniform(0.45, 0.7)
            inside |= (ry - oy) ** 2 + (rx - ox) ** 2 <= r * r
    else:
        raise ValueError(f"unknown demo shape {shape!r}; known: {', '.join(SHAPES)}")
    return inside.reshape(h, s, w, s).mean(axis=(1, 3))


def render_sample(index: int, seed: int = 0) -> DemoImage:
    """Render sample ``index`` of the set drawn with ``seed`` (independent of the other samples)."""
    rng = np.random.default_rng([seed, index])
    h, w = DEMO_SIZES[index % len(DEMO_SIZES)]
    shape = SHAPES[index % len(SHAPES)]
    # Background: sky gradient above a horizon, ground gradient below, both textured.
    horizon = int(rng.uniform(0.45, 0.7) * h)
    sky_top, sky_low = rng.uniform(90, 230, 3), rng.uniform(140, 250, 3)
    ground_top, ground_low = rng.uniform(40, 160, 3), rng.uniform(10, 110, 3)
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    sky = sky_top * (1 - t) + sky_low * t
    ground = ground_top * (1 - t) + ground_low * t
    rows = (np.arange(h) >= horizon)[:, None, None]
    image = np.where(rows, ground, sky) * np.ones((1, w, 1))
    image += 25.0 * _smooth_noise(rng, h, w, 6)[..., None]
    # Distractors: small, low-contrast discs and bars (not salient, not in the mask).
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(int(rng.integers(2, 5))):
        py, px = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(0.03, 0.08) * min(h, w)
        disc = (yy - py) ** 2 + (xx - px) ** 2 <= r * r if rng.random() < 0.5 else \
            (np.abs(yy - py) <= r * 0.4) & (np.abs(xx - px) <= r * 1.5)
        image[disc] += rng.uniform(-30, 30, 3)
    # The salient object: saturated colour with a lighting ramp and its own texture.
    alpha = _coverage(shape, h, w, rng)
    hue = rng.uniform(0, 1)
    base = np.array([np.cos(2 * np.pi * (hue + k / 3)) for k in range(3)]) * 110 + 140
    light = np.linspace(1.15, 0.75, h)[:, None, None] * np.linspace(0.9, 1.1, w)[None, :, None]
    obj = base * light + 18.0 * _smooth_noise(rng, h, w, 12)[..., None]
    image = image * (1 - alpha[..., None]) + obj * alpha[..., None]
    image += rng.normal(0.0, 4.0, size=image.shape)  # sensor grain
    rgb = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    mask = np.where(alpha >= 0.5, 255, 0).astype(np.uint8)
    return DemoImage(id=f"{index + 1:04d}", image=rgb, mask=mask, shape=shape)


def write_demo_dataset(root: str | os.PathLike, n: int = 8, seed: int = 0) -> Path:
    """Write ``n`` samples in ECSSD's layout under ``root`` and a ``demo_dataset.json`` manifest.

    Existing files with the same content are left alone, so re-running the demo does not touch
    them (the manifest records the seed and count; a different seed or count rewrites the set).

    Returns:
        ``root`` as a Path (pass it as ``--data-root`` with ``--dataset ecssd``).
    """
    from PIL import Image

    from segdeploy.engine.writers import atomic_write_bytes, atomic_write_text, encode_png

    if n < 1:
        raise ValueError(f"the demo needs at least one image, got n={n}")
    root = Path(root)
    manifest_path = root / "demo_dataset.json"
    manifest = {"generator": "segdeploy.recipes.demo.render_sample", "seed": seed, "count": n,
                "layout": "ecssd: images/<id>.jpg (JPEG q92) + ground_truth_mask/<id>.png (0/255)",
                "sizes": [list(s) for s in DEMO_SIZES], "shapes": list(SHAPES)}
    images_dir, masks_dir = root / "images", root / "ground_truth_mask"
    if manifest_path.is_file():
        try:
            same = json.loads(manifest_path.read_text()) == manifest
        except ValueError:
            same = False
        if same and all((images_dir / f"{i + 1:04d}.jpg").is_file() and (masks_dir / f"{i + 1:04d}.png").is_file()
                        for i in range(n)):
            return root
    for folder in (images_dir, masks_dir):
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.iterdir():  # an older set with another count or seed
            if stale.is_file():
                stale.unlink()
    import io

    for index in range(n):
        sample = render_sample(index, seed)
        buffer = io.BytesIO()
        Image.fromarray(sample.image).save(buffer, format="JPEG", quality=92)
        atomic_write_bytes(images_dir / f"{sample.id}.jpg", buffer.getvalue())
        atomic_write_bytes(masks_dir / f"{sample.id}.png", encode_png(sample.mask))
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return root
