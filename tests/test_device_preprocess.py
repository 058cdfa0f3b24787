"""Preprocessing and 8-bit mask decoding as torch operations (what PyTorch on CUDA runs) against the
exact host path, on the CPU with the same torch code."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from segdeploy.backends import open_runtime  # noqa: E402
from segdeploy.backends import torch_preprocess as tp  # noqa: E402
from segdeploy.core.registry import get_spec  # noqa: E402
from segdeploy.engine.pipeline import StreamOptions, stream_predictions  # noqa: E402
from segdeploy.engine.transforms import preprocess  # noqa: E402


def packaged_photos() -> list[np.ndarray]:
    from PIL import Image

    folder = resources.files("segdeploy") / "assets" / "photos"
    photos = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".jpg"):
            with entry.open("rb") as fh, Image.open(fh) as img:
                photos.append(np.asarray(img.convert("RGB"), dtype=np.uint8).copy())
    return photos


@pytest.fixture(scope="module")
def photos():
    found = packaged_photos()
    assert len(found) >= 5
    return found


@pytest.mark.parametrize("model", ["u2netp", "unetpp_dsb2018", "unetpp_bigmb"])
def test_device_input_equals_the_host_input(model, photos):
    spec = get_spec(model)
    assert tp.supports_preprocessing(spec)
    for image in photos[:3]:
        host = preprocess(image, spec)
        device = tp.preprocess_on_device(torch, torch.from_numpy(image[None].copy()), spec)[0].numpy()
        assert device.shape == host.shape
        if spec.preprocess.resize_library == "skimage":
            assert np.abs(device - host).max() < 1e-5  # the same float arithmetic, float32 instead of float64
        else:
            # PIL / cv2 resample uint8 in fixed point, torch in float then rounds: one level at most,
            # on a minority of pixels (PIL's 8-bit filter weights round differently in about 1 in 6)
            step = 1.0 / 255 / min(spec.preprocess.std or (1.0,)) / spec.preprocess.post_divide
            assert np.abs(device - host).max() <= step * 1.01
            assert np.abs(device - host).mean() < 0.25 * step


def test_trained_u2netp_masks_agree_with_host_preprocessing(photos):
    """The acceptance line: mask IoU >= 0.999 and map MAE <= 1e-3 against the host path."""
    host_rt = open_runtime("u2netp", "torch", weights=None)
    device_rt = open_runtime("u2netp", "torch", weights=None, device_preprocess=True)
    assert host_rt.device_preprocessing() is None and device_rt.device_preprocessing() == "mask"

    def masks(runtime):
        out = {}
        for outcome in stream_predictions(range(len(photos)), lambda i: photos[i], runtime, runtime.spec,
                                          options=StreamOptions(batch_size=2)):
            assert outcome.ok, outcome.error
            out[outcome.item] = outcome.prediction
        return out

    host, device = masks(host_rt), masks(device_rt)
    for i in range(len(photos)):
        a, b = host[i], device[i]
        assert a.mask.shape == b.mask.shape == photos[i].shape[:2]
        fa, fb = a.mask >= 128, b.mask >= 128
        union = np.logical_or(fa, fb).sum()
        iou = np.logical_and(fa, fb).sum() / union if union else 1.0
        assert iou >= 0.999, (i, iou)
        assert np.abs(a.map - b.map).mean() <= 1e-3


def test_batches_of_mixed_sizes_and_reduced_photos_keep_their_shapes(photos):
    runtime = open_runtime("u2netp", "torch", weights="random", device_preprocess=True)
    images = [photos[0], photos[0][:100, :150].copy(), photos[1]]
    results = list(
        stream_predictions(range(3), lambda i: images[i], runtime, runtime.spec, options=StreamOptions(batch_size=3))
    )
    assert [r.prediction.mask.shape for r in results] == [im.shape[:2] for im in images]
    assert [r.item for r in results] == [0, 1, 2]


def test_run_images_refuses_float_input():
    runtime = open_runtime("u2netp", "torch", weights="random", device_preprocess=True)
    with pytest.raises(ValueError, match="NHWC uint8"):
        runtime.run_images(np.zeros((1, 3, 32, 32), np.float32))
