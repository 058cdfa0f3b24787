"""Small synthetic dataset trees laid out like the real downloads, for tests.

Each ``make_*_tree(root, n)`` writes ``n`` samples of roughly 40x60 pixels under ``root`` and
returns ``root``. Content is deterministic (``seed``): an ellipse of foreground on a noisy
background, so masks are neither empty nor full. Image files are lossy JPEGs where the real
dataset uses JPEG, so compare masks exactly and images only by shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: Sizes (H, W) cycled through by the generators: odd and even, portrait and landscape.
SIZES = ((40, 60), (44, 52), (60, 40), (41, 63))


def ellipse_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean ellipse covering roughly 10-40 % of an HxW frame."""
    cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
    ry, rx = rng.uniform(0.2, 0.35) * h, rng.uniform(0.2, 0.35) * w
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def rgb_image(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """HxWx3 uint8: noise background, brighter foreground where ``mask``."""
    h, w = mask.shape
    image = rng.integers(0, 120, size=(h, w, 3), dtype=np.uint8)
    image[mask] = np.clip(image[mask].astype(np.int32) + 120, 0, 255).astype(np.uint8)
    return image


def make_sod_tree(
    root: str | Path,
    n: int = 6,
    *,
    image_dir: str = "images",
    mask_dir: str = "ground_truth_mask",
    image_ext: str = ".jpg",
    mask_ext: str = ".png",
    seed: int = 0,
    graded: bool = False,
) -> Path:
    """A salient-object set: ``image_dir/<id><image_ext>`` + ``mask_dir/<id><mask_ext>`` (0/255 gray).

    ``image_dir == mask_dir`` makes the MSRA-style mixed folder. ``graded`` writes non-binary masks
    (values 0..255 ramps, like PASCAL-S).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / image_dir).mkdir(parents=True, exist_ok=True)
    (root / mask_dir).mkdir(parents=True, exist_ok=True)
    for index in range(n):
        h, w = SIZES[index % len(SIZES)]
        mask = ellipse_mask(h, w, rng)
        stem = f"{index + 1:04d}"
        Image.fromarray(rgb_image(mask, rng)).save(root / image_dir / f"{stem}{image_ext}")
        gray = mask.astype(np.uint8) * 255
        if graded:
            gray = (mask * np.linspace(60, 255, w)[None, :]).astype(np.uint8)
        Image.fromarray(gray, mode="L").save(root / mask_dir / f"{stem}{mask_ext}")
    return root


def make_ecssd_tree(root: str | Path, n: int = 6, seed: int = 0) -> Path:
    """ECSSD as distributed: ``images/*.jpg`` + ``ground_truth_mask/*.png``."""
    return make_sod_tree(root, n, image_dir="images", mask_dir="ground_truth_mask", seed=seed)


def carvana_ids(n: int) -> list[str]:
    """Carvana-style ids ``<car hex>_<angle>``: 16 angles per car."""
    return [f"{0x0cdf5b5d0ce1 + i // 16:012x}_{i % 16 + 1:02d}" for i in range(n)]


def make_carvana_tree(root: str | Path, n: int = 8, seed: int = 0) -> Path:
    """Carvana as on Kaggle: ``train/<id>.jpg`` + ``train_masks/<id>_mask.gif`` (palette 0/1)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "train_masks").mkdir(parents=True, exist_ok=True)
    for index, sample_id in enumerate(carvana_ids(n)):
        h, w = SIZES[index % len(SIZES)]
        mask = ellipse_mask(h, w, rng)
        Image.fromarray(rgb_image(mask, rng)).save(root / "train" / f"{sample_id}.jpg")
        gif = Image.frombytes("P", (w, h), mask.astype(np.uint8).tobytes())
        gif.putpalette([0, 0, 0, 255, 255, 255] + [0, 0, 0] * 254)
        gif.save(root / "train_masks" / f"{sample_id}_mask.gif")
    return root


def dsb_ids(n: int) -> list[str]:
    """DSB2018-style 64-hex ids."""
    rng = np.random.default_rng(1234)
    return ["".join(f"{v:02x}" for v in rng.integers(0, 256, size=32)) for _ in range(n)]


def make_dsb2018_tree(root: str | Path, n: int = 6, seed: int = 0) -> Path:
    """DSB2018 stage 1 as unzipped: ``stage1_train/<id>/images/<id>.png`` + ``masks/*.png``.

    Images are RGBA (every third one gray 'L', as some DSB images are); each sample has 2-3
    instance masks (0/255 PNGs), which may overlap.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for index, sample_id in enumerate(dsb_ids(n)):
        h, w = SIZES[index % len(SIZES)]
        folder = root / "stage1_train" / sample_id
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "masks").mkdir(parents=True, exist_ok=True)
        union = np.zeros((h, w), dtype=bool)
        for k in range(2 + index % 2):
            inst = ellipse_mask(h, w, rng)
            union |= inst
            mask_id = "".join(f"{v:02x}" for v in rng.integers(0, 256, size=32))
            Image.fromarray(inst.astype(np.uint8) * 255, mode="L").save(folder / "masks" / f"{mask_id}.png")
        rgb = rgb_image(union, rng)
        if index % 3 == 2:
            Image.fromarray(rgb[..., 0], mode="L").save(folder / "images" / f"{sample_id}.png")
        else:
            alpha = np.full((h, w, 1), 255, dtype=np.uint8)
            Image.fromarray(np.concatenate([rgb, alpha], axis=2), mode="RGBA").save(folder / "images" / f"{sample_id}.png")
    return root


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map (768 values), computed here independently of segdeploy."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


def voc_ids(n: int) -> list[str]:
    return [f"2007_{i * 37 + 27:06d}" for i in range(n)]


def make_voc_tree(root: str | Path, n: int = 6, seed: int = 0, *, val_every: int = 2) -> Path:
    """VOC2012 as extracted: ``VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}``.

    Masks are palette PNGs: background 0, one object of class 1 + (index % 20), and a 1-pixel
    boundary ring of 255 around it. ``val.txt`` lists every ``val_every``-th id (in reverse
    order, so list order differs from sorted order); ``train.txt`` the others;
    ``trainval.txt`` all.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    ids = voc_ids(n)
    for index, sample_id in enumerate(ids):
        h, w = SIZES[index % len(SIZES)]
        obj = ellipse_mask(h, w, rng)
        grown = np.zeros_like(obj)
        grown[1:, :] |= obj[:-1, :]
        grown[:-1, :] |= obj[1:, :]
        grown[:, 1:] |= obj[:, :-1]
        grown[:, :-1] |= obj[:, 1:]
        labels = np.zeros((h, w), dtype=np.uint8)
        labels[grown & ~obj] = 255
        labels[obj] = 1 + index % 20
        Image.fromarray(rgb_image(obj, rng)).save(voc / "JPEGImages" / f"{sample_id}.jpg")
        png = Image.frombytes("P", (w, h), labels.tobytes())
        png.putpalette(voc_palette())
        png.save(voc / "SegmentationClass" / f"{sample_id}.png")
    val = ids[::val_every][::-1]
    train = [i for i in ids if i not in val]
    lists = voc / "ImageSets" / "Segmentation"
    (lists / "val.txt").write_text("".join(f"{i}\n" for i in val))
    (lists / "train.txt").write_text("".join(f"{i}\n" for i in train))
    (lists / "trainval.txt").write_text("".join(f"{i}\n" for i in ids))
    return root
