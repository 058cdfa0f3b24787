"""1-stage-wseg SoftMaxAE / ResNet38: layout, golden outputs of the upstream model, PAMR.

Golden files (tests/fixtures/golden/wseg_voc*.npz) come from the UPSTREAM visinf/1-stage-wseg model
(built as get_model(cfg.NET) with configs/voc_resnet38.yaml) carrying
``segdeploy.zoo.checkpoints.random_state_dict(SoftMaxAE(), seed)``, in eval mode:

- wseg_voc.npz: 1x3x64x80 input, raw random weights (near one-hot masks);
- wseg_voc_b2.npz: 2x3x44x52 input (odd stride-4/8 sizes 11x13 and 6x7) with the last 1x1 conv
  divided by ``head_div`` so that logits are O(1) and masks are far from saturated;
- wseg_voc_pamr.npz: upstream PAMR (``net._aff``) and ``net.run_pamr`` on a small image and masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segdeploy.zoo import create_model
from segdeploy.zoo.wseg import PAMR, SoftMaxAE
from segdeploy.zoo.checkpoints import manifest

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
# docs/models.md table: upstream get_model(cfg.NET, num_classes=21) parameter count.
UPSTREAM_PARAMS = 137_973_172


def _golden(name: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / f"{name}.npz") as data:
        return {key: data[key] for key in data.files}


def _assert_close(got: torch.Tensor, ref: np.ndarray, what: str) -> None:
    got = got.detach().numpy()
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    tol = 1e-4 * max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(got - ref).max())
    assert err <= tol, f"{what}: max |diff| {err:.3g} > {tol:.3g}"


def _expected_kernels() -> dict[str, torch.Tensor]:
    """PAMR kernels from their definition: one-hot 3x3 taps in raster order (centre = tap 4)."""
    taps = torch.eye(9).reshape(9, 1, 3, 3)
    neighbours = torch.cat([taps[:4], taps[5:]])
    return {"aff_x": taps[4:5] - neighbours, "aff_m": neighbours, "aff_std": taps}


@pytest.fixture(scope="module")
def meta_model() -> SoftMaxAE:
    # Layout only: meta tensors have shapes and dtypes but no storage (builds in milliseconds).
    with torch.device("meta"):
        return SoftMaxAE(num_classes=21)


@pytest.fixture(scope="module")
def model():
    seed = int(_golden("wseg_voc")["seed"])
    assert seed == int(_golden("wseg_voc_b2")["seed"])
    return create_model("wseg_voc", "random", seed=seed)


@pytest.fixture(scope="module")
def voc_outputs(model):
    ref = _golden("wseg_voc")
    with torch.no_grad():
        cls, masks = model(torch.from_numpy(ref["input"]))
    return ref, cls, masks


def test_state_dict_matches_upstream_manifest(meta_model):
    got = [(key, tuple(t.shape), str(t.dtype).removeprefix("torch."))
           for key, t in meta_model.state_dict().items()]
    expected = manifest("wseg.state_dict.json")
    assert [k for k, _, _ in got] == [k for k, _, _ in expected]  # keys and their order
    assert got == expected  # shapes and dtypes too
    assert len(got) == 309


def test_parameter_count(meta_model):
    assert sum(p.numel() for p in meta_model.parameters()) == UPSTREAM_PARAMS


def test_pamr_kernels_are_upstream_constants():
    pamr = PAMR()
    for name, expected in _expected_kernels().items():
        assert torch.equal(getattr(pamr, name).kernel, expected), name
    # They are buffers (saved in the state_dict), not parameters.
    assert {n for n, _ in pamr.named_buffers()} == {"aff_x.kernel", "aff_m.kernel", "aff_std.kernel"}
    assert not list(pamr.parameters())


def test_pamr_copy_kernel_shifts_image():
    # aff_m at dilation d returns, per neighbour (raster order), the replicate-padded image shifted by d.
    pamr = PAMR(dilations=(2,))
    img = torch.arange(6 * 7, dtype=torch.float32).reshape(1, 1, 6, 7)
    out = pamr.aff_m(img)[0, 0]  # (8, H, W)
    padded = F.pad(img, [2] * 4, mode="replicate")[0, 0]
    offsets = [(dr, dc) for dr in (-2, 0, 2) for dc in (-2, 0, 2) if (dr, dc) != (0, 0)]
    for index, (dr, dc) in enumerate(offsets):
        assert torch.equal(out[index], padded[2 + dr:2 + dr + 6, 2 + dc:2 + dc + 7]), (dr, dc)


def test_pamr_matches_upstream():
    ref = _golden("wseg_voc_pamr")
    with torch.no_grad():
        out = PAMR()(torch.from_numpy(ref["image"]), torch.from_numpy(ref["mask"]))
    _assert_close(out, ref["pamr"], "PAMR")


def test_pamr_rejects_altered_kernel():
    pamr = PAMR(num_iter=1, dilations=(1,))
    with torch.no_grad():
        pamr.aff_std.kernel[4, 0, 1, 1] = 2.0
    with pytest.raises(ValueError, match="aff_std"):
        pamr(torch.rand(1, 3, 8, 8), torch.rand(1, 2, 8, 8))


@pytest.mark.slow
def test_golden_voc(voc_outputs):
    ref, cls, masks = voc_outputs
    _assert_close(cls, ref["output_0"], "cls")
    _assert_close(masks, ref["output_1"], "masks")


@pytest.mark.slow
def test_masks_are_probabilities(voc_outputs):
    ref, cls, masks = voc_outputs
    assert cls.shape == (1, 20)
    assert masks.shape == (1, 21, *ref["input"].shape[-2:])
    assert masks.min() >= 0
    torch.testing.assert_close(masks.sum(1), torch.ones_like(masks[:, 0]), atol=1e-5, rtol=0)
    # Non-trivial: several classes win somewhere.
    assert masks.argmax(1).unique().numel() > 2


@pytest.mark.slow
def test_golden_batch2_odd_size_tempered_head(model):
    ref = _golden("wseg_voc_b2")
    head = model.last_conv[8]
    saved = head.weight.detach().clone(), head.bias.detach().clone()
    try:
        with torch.no_grad():
            head.weight.div_(float(ref["head_div"]))
            head.bias.div_(float(ref["head_div"]))
            cls, masks = model(torch.from_numpy(ref["input"]))
    finally:
        with torch.no_grad():
            head.weight.copy_(saved[0])
            head.bias.copy_(saved[1])
    _assert_close(cls, ref["output_0"], "cls (batch 2)")
    _assert_close(masks, ref["output_1"], "masks (batch 2)")
    torch.testing.assert_close(masks.sum(1), torch.ones_like(masks[:, 0]), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_loaded_model_keeps_pamr_kernels_and_refines_like_upstream(model):
    for name, expected in _expected_kernels().items():
        assert torch.equal(getattr(model._aff, name).kernel, expected), name
    ref = _golden("wseg_voc_pamr")
    with torch.no_grad():
        out = model.refine_masks(torch.from_numpy(ref["image"]), torch.from_numpy(ref["mask"]))
    _assert_close(out, ref["run_pamr"], "run_pamr")
