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


def _padded_reference(image, height, width):
    """The earlier implementation: float64 copy of the whole image plus a zero ring (memory-hungry)."""
    from segdeploy.engine.transforms import _linear_axis

    image = image.astype(np.float64) / 255.0
    padded = np.zeros((image.shape[0] + 2, image.shape[1] + 2, image.shape[2]), dtype=np.float64)
    padded[1:-1, 1:-1] = image
    r0, r1, wr = _linear_axis(image.shape[0], height)
    c0, c1, wc = _linear_axis(image.shape[1], width)
    r0, r1 = np.clip(r0 + 1, 0, image.shape[0] + 1), np.clip(r1 + 1, 0, image.shape[0] + 1)
    c0, c1 = np.clip(c0 + 1, 0, image.shape[1] + 1), np.clip(c1 + 1, 0, image.shape[1] + 1)
    rows = padded[r0] * (1 - wr)[:, None, None] + padded[r1] * wr[:, None, None]
    out = rows[:, c0] * (1 - wc)[None, :, None] + rows[:, c1] * wc[None, :, None]
    return np.clip(out, image.min(), image.max())


@pytest.mark.parametrize("shape", [(173, 419), (320, 320), (97, 61), (640, 480), (1, 5)])
def test_lean_skimage_resize_is_bit_identical(shape):
    from segdeploy.engine.transforms import resize_skimage_constant

    image = photo(*shape, seed=shape[0])
    out = resize_skimage_constant(image, 320, 320)
    assert out.dtype == np.float64
    assert np.array_equal(out, _padded_reference(image, 320, 320))


def test_input_policy_reduces_native_models_and_keeps_fixed_size_exact():
    from segdeploy.engine.transforms import EXACT_PIXELS, InputPolicy

    wseg = InputPolicy.for_model(get_spec("wseg_voc"))
    assert wseg.max_side == 512 and wseg.working_size(4000, 3000) == (512, 384)
    assert wseg.working_size(500, 375) == (500, 375)
    assert InputPolicy.for_model(get_spec("wseg_voc"), 0).working_size(4000, 3000) == (4000, 3000)
    assert InputPolicy.for_model(get_spec("wseg_voc"), 1000).working_size(3000, 4000) == (750, 1000)
    u2 = InputPolicy.for_model(get_spec("u2netp"))
    assert u2.working_size(6000, 4000) == (6000, 4000)  # 24 MP: exactly as upstream
    assert 6000 * 4000 <= EXACT_PIXELS
    w, h = u2.working_size(12000, 12000)
    assert (w, h) == (640, 640)  # ≥ 2x the 320x320 network input


def test_native_model_sees_reduced_input_and_writes_full_size_mask():
    from segdeploy.engine.pipeline import StreamOptions, stream_predictions

    seen = []

    class Rt:
        def run(self, batch):
            seen.append(batch.shape)
            n, _, h, w = batch.shape
            return [np.zeros((n, 20), np.float32), np.full((n, 21, h, w), 1 / 21, np.float32)]

    image = photo(300, 1200)
    out = list(
        stream_predictions([0], lambda _: image, Rt(), get_spec("wseg_voc"), options=StreamOptions(max_side=400))
    )
    assert seen == [(1, 3, 104, 400)]  # 100 x 400 padded to a multiple of 8, aspect kept
    assert out[0].prediction.mask.shape == (300, 1200)
    list(stream_predictions([0], lambda _: image, Rt(), get_spec("wseg_voc"), options=StreamOptions(max_side=0)))
    assert seen[-1] == (1, 3, 304, 1200)


def test_semantic_mask_in_channel_chunks_equals_full_argmax_and_map_is_lazy():
    from segdeploy.tasks.base import resize_float

    rng = np.random.default_rng(3)
    raw = rng.random((21, 13, 17)).astype(np.float32)
    raw[5, 2, 3] = raw[7, 2, 3] = 2.0  # a tie: argmax keeps the lower class id
    pred = decode([np.zeros(20, np.float32), raw], get_spec("wseg_voc"), (40, 50))
    full = resize_float(raw, 40, 50)
    assert np.array_equal(pred.mask, full.argmax(axis=0).astype(np.uint8))
    assert pred._map is None  # nothing built until asked for
    assert np.array_equal(pred.map, full) and pred.map.dtype == np.float32


def test_saliency_map_is_built_on_demand_from_the_mask():
    raw = np.random.default_rng(4).random((1, 320, 320)).astype(np.float32)
    pred = decode([raw] + [raw] * 6, get_spec("u2netp"), (30, 45))
    assert pred._map is None
    assert np.array_equal(pred.map, pred.mask.astype(np.float32) / 255.0)
