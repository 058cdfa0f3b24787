"""U²-Net input preparation equals upstream data_loader.RescaleT(320) + ToTensorLab(flag=0).

tests/fixtures/golden/u2net_preprocess.npz was written by running the UPSTREAM U-2-Net
data_loader.py transforms on a generated photo-like image (173 x 419, values 99..235), with
``skimage.transform.resize(..., anti_aliasing=False)`` as in the scikit-image 0.14 that upstream
pins. Rows are up-sampled (border samples blend with cval 0, then skimage clips to the input's
[min, max]) and columns down-sampled; the max is 235, so ``/max`` differs from ``/255``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segdeploy.core.specs import IMAGENET_MEAN, IMAGENET_STD

from segdeploy.core.registry import get_spec

transforms = pytest.importorskip("segdeploy.engine.transforms")

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
STD = np.asarray(IMAGENET_STD)[:, None, None]
# Differences are compared after undoing the std scaling, i.e. in units of the [0, 1] image the
# resize produced: 1/255 is one 8-bit grey level. The known deviations are far larger (no clip at
# the up-sampled border: 19/255; cval-0 border ignored, as cv2 does: 54/255; x/255 instead of x/max:
# up to 20/255; anti-aliased down-sampling: > 1/255), while an exact float re-implementation
# is within 1e-4/255.
TOL = 1.0 / 255


def _max_grey_error(x: np.ndarray, ref: np.ndarray) -> float:
    return float((np.abs(x.astype(np.float64) - ref) * STD).max())


@pytest.mark.parametrize("name", ["u2net", "u2netp"])
def test_preprocess_equals_upstream_data_loader(name):
    golden = np.load(GOLDEN / "u2net_preprocess.npz")
    x = transforms.preprocess(golden["image"], get_spec(name))
    assert x.shape == (3, 320, 320) and x.dtype == np.float32
    err = _max_grey_error(x, golden["expected"])
    assert err <= TOL, f"max |diff| = {err * 255:.3f}/255 after undoing std"


def _hazy_image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([120 + 90 * xx, 110 + 100 * yy, 200 - 80 * xx * yy], -1)
    img += rng.normal(0, 6, img.shape)
    return np.clip(np.round(img), 80, 230).astype(np.uint8)


def _upstream_formula(image: np.ndarray) -> np.ndarray:
    """skimage resize as RescaleT(320) calls it (0.14: no anti-aliasing), then ToTensorLab(flag=0)."""
    resize = pytest.importorskip("skimage.transform").resize
    r = resize(image, (320, 320), mode="constant", order=1, anti_aliasing=False)
    return ((r / r.max() - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)).transpose(2, 0, 1)


@pytest.mark.parametrize("h,w", [(40, 57), (300, 330), (320, 320), (500, 700)])
def test_preprocess_equals_skimage_reference_for_up_and_down_sampling(h, w):
    # 40x57: x8 / x5.6 up-sampling, three border pixels per side blend with cval 0 and get clipped
    # to the (lifted) image minimum; 500x700: down-sampling where anti-aliasing would show.
    image = _hazy_image(h, w, seed=h)
    err = _max_grey_error(transforms.preprocess(image, get_spec("u2net")), _upstream_formula(image))
    assert err <= TOL, f"{h}x{w}: max |diff| = {err * 255:.3f}/255 after undoing std"
