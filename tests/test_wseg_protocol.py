"""1-stage-wseg test-time protocol: view layout, merge (against a numpy reference), dense CRF behaviour."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segdeploy.zoo.wseg_protocol import (
    MultiScaleMeta,
    dense_crf,
    make_views,
    merge_views,
    run_protocol,
)

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _normalise(rgb: np.ndarray) -> np.ndarray:
    return ((rgb / 255.0 - MEAN) / STD).astype(np.float32).transpose(2, 0, 1)


# ---------------------------------------------------------------------------------------------- views
def test_make_views_layout():
    img = _image(9, 14)  # H=9, W=14
    batch, meta = make_views(img, pad_size=(32, 40))
    assert batch.shape == (8, 3, 32, 40) and batch.dtype == np.float32
    assert isinstance(meta, MultiScaleMeta) and meta.image_hw == (9, 14) and meta.pad_size == (32, 40)
    # (scale, flip, w, h): Python round is half-to-even, 9*0.5=4.5 -> 4 and 9*1.5=13.5 -> 14
    expected = [
        (1.0, False, 14, 9), (1.0, True, 14, 9), (0.5, False, 7, 4), (0.5, True, 7, 4),
        (1.5, False, 21, 14), (1.5, True, 21, 14), (2.0, False, 28, 18), (2.0, True, 28, 18),
    ]  # fmt: skip
    assert [(v.scale, v.flip, v.w, v.h) for v in meta.views] == expected
    for i, v in enumerate(meta.views):
        assert v.pad_t == (32 - v.h) // 2 and v.pad_l == (40 - v.w) // 2
        inside = np.zeros((32, 40), bool)
        inside[v.pad_t : v.pad_t + v.h, v.pad_l : v.pad_l + v.w] = True
        assert np.all(batch[i][:, ~inside] == 0), f"padding of view {i} is not zero"
        assert np.all(batch[i][:, inside] != 0)  # (x/255 - mean)/std is never exactly 0 for uint8 x
        box = batch[i][:, inside].reshape(3, v.h, v.w)
        scaled = np.asarray(Image.fromarray(img).resize((v.w, v.h), Image.BICUBIC))
        want = _normalise(scaled[:, ::-1] if v.flip else scaled)
        np.testing.assert_array_equal(box, want)
    # scale 1 is the image itself, and the flipped view mirrors it inside the same box
    v0 = meta.views[0]
    crop0 = batch[0][:, v0.pad_t : v0.pad_t + 9, v0.pad_l : v0.pad_l + 14]
    np.testing.assert_array_equal(crop0, _normalise(img))
    np.testing.assert_array_equal(batch[1][:, v0.pad_t : v0.pad_t + 9, v0.pad_l : v0.pad_l + 14], crop0[:, :, ::-1])


def test_make_views_options_and_errors():
    img = _image(10, 12)
    batch, meta = make_views(img, scales=(1.0, 0.5), flip=False, pad_size=(16, 16))
    assert batch.shape == (2, 3, 16, 16) and [v.flip for v in meta.views] == [False, False]
    with pytest.raises(ValueError, match="larger than the pad canvas"):
        make_views(img, pad_size=(20, 20))  # scale 2 -> 24x20 does not fit
    with pytest.raises(ValueError, match="uint8 RGB"):
        make_views(img.astype(np.float32), pad_size=(32, 32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        make_views(img[..., 0], pad_size=(32, 32))


# ---------------------------------------------------------------------------------------------- merge
def _bilinear_half_pixel(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Reference bilinear resize of [C, h, w] with half-pixel centres (align_corners=False), float64."""

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        src = np.maximum(src, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, ly = axis(x.shape[1], out_h)
    x0, x1, lx = axis(x.shape[2], out_w)
    x = x.astype(np.float64)
    top = x[:, y0][:, :, x0] * (1 - lx) + x[:, y0][:, :, x1] * lx
    bottom = x[:, y1][:, :, x0] * (1 - lx) + x[:, y1][:, :, x1] * lx
    return top * (1 - ly)[:, None] + bottom * ly[:, None]


def _reference_merge(cls: np.ndarray, masks: np.ndarray, meta: MultiScaleMeta) -> np.ndarray:
    h, w = meta.image_hw
    present = (1 / (1 + np.exp(-cls.astype(np.float64)))).max(axis=0) > 0.1
    acc = np.zeros((masks.shape[1], h, w))
    for i, v in enumerate(meta.views):
        crop = masks[i, :, v.pad_t : v.pad_t + v.h, v.pad_l : v.pad_l + v.w]
        up = _bilinear_half_pixel(crop, h, w)
        if v.flip:
            up = up[:, :, ::-1]
        up[1:] *= present[:, None, None]
        acc += up
    acc /= len(meta.views)
    acc[0] = acc[0] ** 3
    return acc


def test_reference_resize_is_half_pixel_bilinear():
    # sanity of the test's own helper on a case solvable by hand: 2 -> 4 samples at -0.25, 0.25, 0.75, 1.25
    x = np.array([[[0.0, 1.0]]])
    np.testing.assert_allclose(_bilinear_half_pixel(x, 1, 4)[0, 0], [0.0, 0.25, 0.75, 1.0])


def test_merge_matches_numpy_reference():
    rng = np.random.default_rng(0)
    img = _image(11, 15, seed=1)
    _, meta = make_views(img, pad_size=(32, 32))
    logits = rng.normal(size=(8, 21, 32, 32))
    masks = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    masks = masks.astype(np.float32)
    # classes far from the 0.1 cut either way: sigmoid(-5) = 0.007, sigmoid(1) = 0.73
    cls = np.full((8, 20), -5.0, np.float32)
    kept = [2, 7, 14]
    cls[3, kept[0]] = 1.0  # present in one view only is enough (max over views)
    cls[:, kept[1]] = 1.0
    cls[6, kept[2]] = 1.0
    merged = merge_views(cls, masks, meta)
    assert merged.shape == (21, 11, 15) and merged.dtype == np.float32
    want = _reference_merge(cls, masks, meta)
    np.testing.assert_allclose(merged, want, rtol=0, atol=2e-6)
    dropped = [c for c in range(20) if c not in kept]
    assert np.all(merged[1:][dropped] == 0)
    assert np.all(merged[[1 + c for c in kept]] > 0)
    # torch inputs give the same answer
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(merge_views(torch.from_numpy(cls), torch.from_numpy(masks), meta), merged)


def test_merge_unflips_and_discounts_background():
    """A mask that is a left-right ramp in every view must come back as the same ramp, unflipped."""
    img = _image(6, 8)
    batch, meta = make_views(img, scales=(1.0,), flip=True, pad_size=(8, 8))
    ramp = np.linspace(0.0, 1.0, 8, dtype=np.float32)
    masks = np.zeros((2, 3, 8, 8), np.float32)
    masks[:, 1] = ramp  # foreground class grows to the right in the original
    masks[1, 1] = ramp[::-1]  # the flipped view sees it mirrored
    masks[:, 0] = 1 - masks[:, 1]
    cls = np.array([[5.0, -5.0], [5.0, -5.0]], np.float32)
    merged = merge_views(cls, masks, meta)
    np.testing.assert_allclose(merged[1], np.broadcast_to(ramp[:8], (6, 8)), atol=1e-6)
    np.testing.assert_allclose(merged[0], np.broadcast_to((1 - ramp) ** 3, (6, 8)), atol=1e-6)
    assert np.all(merged[2] == 0)
    with pytest.raises(ValueError, match="masks must be"):
        merge_views(cls, masks[:, :, :4], meta)
    with pytest.raises(ValueError, match="cls must be"):
        merge_views(cls[:, :1], masks, meta)


# ---------------------------------------------------------------------------------------------- CRF
def _two_region_image(h: int = 24, w: int = 32, edge: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    img = np.empty((h, w, 3), np.int64)
    img[:] = (30, 40, 50)
    img[:, edge:] = (220, 200, 180)
    img = np.clip(img + rng.integers(-5, 6, img.shape), 0, 255).astype(np.uint8)
    truth = np.zeros((h, w), np.int64)
    truth[:, edge:] = 1
    return img, truth


def test_crf_cleans_noisy_labels():
    img, truth = _two_region_image()
    rng = np.random.default_rng(1)
    noisy = np.where(rng.random(truth.shape) < 0.3, 1 - truth, truth)
    probs = np.full((21, *truth.shape), 0.01, np.float32)
    for c in (0, 1):
        probs[c] = np.where(noisy == c, 0.6, 0.3)
    out = dense_crf(img, probs)
    assert out.dtype == np.uint8 and out.shape == truth.shape
    assert out.max() < 21
    before, after = (noisy == truth).mean(), (out == truth).mean()
    assert before < 0.75 and after > 0.95


def test_crf_moves_a_blurry_boundary_to_the_image_edge():
    img, truth = _two_region_image(edge=10)
    h, w = truth.shape
    # class-1 probability ramps across the image: argmax boundary near column 16, the edge is at 10
    p1 = np.broadcast_to(0.2 + 0.6 * np.arange(w) / (w - 1), (h, w)).astype(np.float32)
    probs = np.full((21, h, w), 1e-3, np.float32)
    probs[1], probs[0] = p1, 1 - p1
    before = probs.argmax(0)
    out = dense_crf(img, probs)
    assert (before == truth).mean() < 0.85
    assert (out == truth).mean() > 0.97
    with pytest.raises(ValueError, match="probs must be"):
        dense_crf(img, probs[:, :5])


def test_run_protocol_wiring():
    img, truth = _two_region_image(12, 16, edge=6)
    calls = []

    def forward(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(batch.shape)
        # background where the view is dark, class 5 where it is bright (works for every scale/flip)
        bright = batch.mean(axis=1) > 0.5
        masks = np.full((batch.shape[0], 21, *batch.shape[2:]), 0.001, np.float32)
        masks[:, 0] = np.where(bright, 0.05, 0.95)
        masks[:, 5] = np.where(bright, 0.95, 0.05)
        cls = np.full((batch.shape[0], 20), -6.0, np.float32)
        cls[:, 4] = 3.0  # class 5 (foreground index 4) present
        return cls, masks

    res = run_protocol(img, forward, pad_size=(32, 32))
    assert calls == [(8, 3, 32, 32)]
    assert res.probs.shape == (21, 12, 16) and res.labels.dtype == np.uint8
    expected = np.where(truth == 1, 5, 0)
    assert (res.labels == expected).mean() > 0.9
    assert res.labels_crf is not None and (res.labels_crf == expected).mean() > 0.9
    assert run_protocol(img, forward, crf=False, pad_size=(32, 32)).labels_crf is None


def test_crf_accepts_read_only_image():
    from segdeploy.zoo.wseg_protocol import dense_crf

    image = np.zeros((12, 16, 3), np.uint8)
    image[:, 8:] = 200
    image.setflags(write=False)  # as np.asarray(PIL image) gives
    probs = np.full((21, 12, 16), 0.01, np.float32)
    probs[0, :, :8] = 0.9
    probs[5, :, 8:] = 0.9
    labels = dense_crf(image, probs)
    assert labels[:, :8].max() == 0 and (labels[:, 9:] == 5).all()
