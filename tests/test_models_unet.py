"""UNet-family networks (milesial UNet, 4uiiurz1 / bigmb UNet++, bigmb U_Net) against their upstreams.

Golden files in tests/fixtures/golden/ were produced by running the UPSTREAM modules (outside this
repository) with segdeploy.zoo.checkpoints.random_state_dict(<segdeploy module>, seed) loaded strictly, in
float64, on the stored seeded input. A failing golden means the architecture differs from upstream.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from segdeploy.zoo import create_model
from tests.registry_params import model_params
from segdeploy.core.registry import get_spec
from segdeploy.zoo.checkpoints import WeightsError, manifest, random_state_dict

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
# (registry name, fixture file)
GOLDEN_CASES = [
    ("unet_carvana", "unet_carvana.npz"),  # 1x3x61x95: odd sizes, asymmetric decoder padding
    ("unet_carvana", "unet_carvana_64.npz"),
    ("unetpp_dsb2018", "unetpp_dsb2018.npz"),  # batch of 2
    ("unetpp_dsb2018_nearest", "unetpp_dsb2018_nearest.npz"),
    ("unetpp_bigmb", "unetpp_bigmb.npz"),
    ("unet_bigmb", "unet_bigmb.npz"),
]


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.mark.parametrize("name", model_params())
def test_state_dict_layout_equals_upstream_manifest(name):
    spec = get_spec(name)
    if spec.manifest is None:  # ModelSpec allows a model without an upstream layout
        pytest.skip(f"{name} registers no manifest")
    model = spec.build()
    got = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]
    assert got == manifest(spec.manifest)


@pytest.mark.parametrize(("name", "fixture"), GOLDEN_CASES)
def test_matches_upstream_golden(name, fixture):
    data = np.load(GOLDEN / fixture)
    model = create_model(name, "random", seed=int(data["seed"]))
    with torch.no_grad():
        out = model(torch.from_numpy(data["input"]))
    ref = data["output_0"]
    assert isinstance(out, torch.Tensor)
    assert tuple(out.shape) == ref.shape
    err = np.abs(out.numpy() - ref).max()
    assert err <= 1e-4 * max(1.0, float(np.abs(ref).max())), f"{fixture}: max abs error {err:.3g}"


def test_unet_checkpoint_with_mask_values_and_module_prefix_loads(tmp_path):
    # A HEAD-train.py checkpoint adds 'mask_values'; DataParallel adds 'module.'.
    reference = create_model("unet_carvana", "random", seed=3)
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    state["mask_values"] = [0, 1]
    path = tmp_path / "unet_head.pth"
    torch.save(state, path)
    model = create_model("unet_carvana", path)
    assert model.segdeploy_weights.kind == "file"
    loaded = model.state_dict()
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded[key], value), key


def test_bigmb_unetpp_checkpoint_into_dsb_model_names_mismatch_and_suggests(tmp_path):
    bigmb = get_spec("unetpp_bigmb").build()
    path = tmp_path / "bigmb.pth"
    torch.save(random_state_dict(bigmb, 1), path)
    with pytest.raises(WeightsError) as info:
        create_model("unetpp_dsb2018", path)
    message = str(info.value)
    assert "shape mismatch" in message
    assert "conv0_0.conv1.weight" in message
    assert "unetpp_bigmb" in message


def test_nearest_and_bilinear_variants_differ_on_same_weights():
    bilinear = create_model("unetpp_dsb2018", "random", seed=5)
    nearest = create_model("unetpp_dsb2018_nearest", "random", seed=5)
    for (k1, v1), (k2, v2) in zip(bilinear.state_dict().items(), nearest.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = bilinear(x), nearest(x)
    assert (a - b).abs().max() > 0.05 * a.std()


@pytest.mark.parametrize("name", ["unetpp_dsb2018", "unet_bigmb"])
def test_size_not_multiple_of_16_is_a_clear_error(name):
    model = get_spec(name).build().eval()
    with pytest.raises(ValueError, match="divisible by 16"):
        model(torch.zeros(1, 3, 40, 24))


def test_nested_unet_rejects_unknown_upsample_mode():
    from segdeploy.zoo.nested_unet import NestedUNet

    with pytest.raises(ValueError, match="upsample"):
        NestedUNet(upsample="bicubic")
