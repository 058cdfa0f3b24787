import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from segdeploy import get_spec
from segdeploy.engine.transforms import decode, preprocess, preprocess_batch, preprocess_with_valid, target_size
from tests.image_zoo import photo


def test_resize_back_matches_torch_interpolate():
    from segdeploy.tasks.base import resize_float as _resize_float

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((21, 37, 53)).astype(np.float32)
    for size in [(100, 120), (20, 30), (37, 53)]:
        ref = F.interpolate(torch.from_numpy(logits)[None], size=size, mode="bilinear", align_corners=False)[0]
        assert np.abs(_resize_float(logits, *size) - ref.numpy()).max() < 1e-4


def test_carvana_size_truncates_like_upstream():
    assert target_size(get_spec("unet_carvana").preprocess, 1280, 1918) == (640, 959)
    assert target_size(get_spec("unet_carvana").preprocess, 61, 95) == (30, 47)


def test_saliency_decode_is_minmax_then_8bit_then_pil_bilinear():
    spec = get_spec("u2netp")
    rng = np.random.default_rng(1)
    d0 = rng.random((1, 20, 24)).astype(np.float32) * 0.5 + 0.2
    pred = decode([d0] + [np.zeros_like(d0)] * 6, spec, (40, 30))
    norm = (d0[0] - d0.min()) / (d0.max() - d0.min())
    expected = np.asarray(Image.fromarray((norm * 255).astype(np.uint8)).resize((30, 40), Image.BILINEAR))
    assert pred.mask.shape == (40, 30) and np.array_equal(pred.mask, expected)
    assert pred.mask.max() >= 250 and pred.mask.min() <= 5  # min-max stretched


def test_binary_two_class_argmax_and_sigmoid_threshold():
    logits = np.zeros((2, 4, 4), np.float32)
    logits[1, :2] = 3.0
    pred = decode(logits, get_spec("unet_carvana"), (8, 8))
    assert pred.mask[:3].all() and not pred.mask[5:].any()
    one = np.full((1, 96, 96), -2.0, np.float32)
    one[0, 10:20, 10:20] = 2.0
    pred = decode(one, get_spec("unetpp_dsb2018"), (96, 96))
    assert pred.mask.sum() == 100 and pred.map.max() == pytest.approx(1 / (1 + np.exp(-2)), rel=1e-5)


def test_semantic_decode_uses_masks_output_and_argmax():
    masks = np.full((21, 16, 16), 0.01, np.float32)
    masks[15, 4:12, 4:12] = 0.9
    pred = decode([np.zeros(20, np.float32), masks], get_spec("wseg_voc"), (32, 32))
    assert pred.map.shape == (21, 32, 32) and set(np.unique(pred.mask)) == {0, 15}


def test_native_size_model_pads_to_multiple_and_decode_crops():
    spec = get_spec("wseg_voc")  # native size, multiple_of 8
    chw, valid = preprocess_with_valid(photo(45, 50), spec)
    assert chw.shape == (3, 48, 56) and valid == (45, 50)
    assert np.all(chw[:, 45:, :] == 0) and np.all(chw[:, :, 50:] == 0)


def test_dsb_quirk_bgr_and_double_division():
    image = np.zeros((96, 96, 3), np.uint8)
    image[..., 0] = 255  # pure red in RGB → last channel in BGR
    x = preprocess(image, get_spec("unetpp_dsb2018"))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected_bgr = ((np.array([0.0, 0.0, 1.0]) - mean) / std) / 255
    assert np.allclose(x[:, 0, 0], expected_bgr, atol=1e-7)


def test_batch_rejects_mixed_sizes_and_validates_input():
    with pytest.raises(ValueError, match="different input sizes"):
        preprocess_batch([photo(20, 20), photo(30, 20)], "wseg_voc")
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        preprocess(np.zeros((5, 5), np.uint8), "u2net")
