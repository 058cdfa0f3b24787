"""The banded PIL resize that brings a saliency mask to a large photo's size gives the bytes of
Pillow's whole resize (upstream's u2net_test.py resizes whole), for every band layout it chooses."""

import numpy as np
import pytest
from PIL import Image

import segdeploy.tasks.base as task_base
from segdeploy.tasks.base import resize_u8_pil


@pytest.fixture
def band_everything(monkeypatch):
    """Band every output the unit allows, so that small sizes exercise the band path."""
    monkeypatch.setattr(task_base, "BANDED_RESIZE_PIXELS", 0)


@pytest.mark.parametrize("source_hw, out_hw", [
    ((320, 320), (6000, 6000)),    # 75-row unit, several bands
    ((320, 320), (3000, 4000)),    # a 4:3 photo
    ((320, 320), (4032, 3024)),    # a phone photo, portrait
    ((320, 320), (3001, 401)),     # a prime height: one whole resize
    ((320, 320), (100, 2000)),     # downscaled rows, upscaled columns
    ((96, 96), (1024, 2048)),      # UNet++'s 96-pixel maps
    ((320, 320), (7, 5000)),
])
def test_bands_give_the_whole_resize_bytes(band_everything, source_hw, out_hw):
    rng = np.random.default_rng(sum(out_hw))
    source = rng.integers(0, 256, source_hw, dtype=np.uint8)
    height, width = out_hw
    whole = np.asarray(Image.fromarray(source).resize((width, height), resample=Image.Resampling.BILINEAR))
    banded = resize_u8_pil(source, width, height, Image.Resampling.BILINEAR)
    assert banded.shape == (height, width) and banded.dtype == np.uint8
    assert np.array_equal(banded, whole)


def test_a_144_megapixel_mask_is_made_in_bands_without_a_whole_pil_image(monkeypatch):
    """The default threshold bands a 12000 x 12000 mask: no PIL resize call returns the full size."""
    calls = []
    original = Image.Image.resize

    def recording_resize(self, size, *args, **kwargs):
        calls.append(size)
        return original(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", recording_resize)
    source = np.random.default_rng(0).integers(0, 256, (320, 320), dtype=np.uint8)
    mask = resize_u8_pil(source, 12000, 12000, Image.Resampling.BILINEAR)
    assert mask.shape == (12000, 12000)
    assert calls and max(w * h for w, h in calls) <= 12000 * 600
    monkeypatch.setattr(Image.Image, "resize", original)
    rows = slice(5925, 6075)  # a band border inside
    whole = np.asarray(Image.fromarray(source).resize((12000, 12000), resample=Image.Resampling.BILINEAR))
    assert np.array_equal(mask[rows], whole[rows])
