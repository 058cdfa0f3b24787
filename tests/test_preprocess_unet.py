"""segdeploy.engine.transforms.preprocess against the UNet-family upstream preprocessing.

Fixtures were produced outside the repository by the upstream pipelines on a seeded photo-like RGB
image (``image``): milesial BasicDataset.preprocess (scale 0.5, PIL BICUBIC, /255); 4uiiurz1 val
path (cv2 BGR read, albumentations Resize(96, 96) + Normalize(), then /255 again; albumentations'
arithmetic reproduced because it is not installed); bigmb PIL BILINEAR 512x512 + ToTensor +
Normalize(0.5, 0.5). ``expected`` is exactly what upstream feeds the network.

Tolerance: one 8-bit grey level after each model's scaling (a resampler rounding one level apart).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segdeploy.core.specs import IMAGENET_STD

from segdeploy.core.registry import get_spec

# segdeploy.engine.transforms was written concurrently; skip (not fail) where it is absent.
transforms = pytest.importorskip("segdeploy.engine.transforms")

GOLDEN = Path(__file__).parent / "fixtures" / "golden"

# One grey level in each model's input units:
#   milesial: x = p / 255; 4uiiurz1: x = (p / 255 - m) / s / 255 (smallest std gives the largest
#   step); bigmb: x = (p / 255 - 0.5) / 0.5.
CASES = [
    ("unet_carvana", 1 / 255),
    ("unetpp_dsb2018", 1 / 255 / min(IMAGENET_STD) / 255),
    ("unetpp_dsb2018_nearest", 1 / 255 / min(IMAGENET_STD) / 255),
    ("unetpp_bigmb", 2 / 255),
    ("unet_bigmb", 2 / 255),
]
FIXTURE = {"unetpp_dsb2018_nearest": "unetpp_dsb2018", "unet_bigmb": "unetpp_bigmb"}


@pytest.mark.parametrize(("name", "step"), CASES)
def test_preprocess_matches_upstream(name, step):
    data = np.load(GOLDEN / f"{FIXTURE.get(name, name)}_preprocess.npz")
    got = transforms.preprocess(data["image"], get_spec(name))
    expected = data["expected"]
    assert got.dtype == np.float32
    assert got.shape == expected.shape
    err = np.abs(got - expected)
    assert err.max() <= step * 1.001, f"{name}: max error {err.max():.3g} > one level {step:.3g}"
    # Off-by-one-level pixels would be resampler rounding; they must stay rare.
    assert (err > step * 0.5).mean() < 0.01
