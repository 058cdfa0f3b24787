"""U²-Net / U²-Netp: exact upstream layout, outputs equal to the upstream module, checkpoint handling.

Golden fixtures (tests/fixtures/golden/u2net*.npz) were produced by running the UPSTREAM
xuebinqin/U-2-Net model/u2net.py module (not this package's code) with the weights
``segdeploy.zoo.checkpoints.random_state_dict(<module>, seed)`` loaded strictly into it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from segdeploy.zoo import create_model
from segdeploy.core.registry import get_spec
from segdeploy.zoo.checkpoints import WeightsError, manifest, random_state_dict

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
CASES = [("u2netp", "u2netp_64"), ("u2netp", "u2netp_odd"), ("u2net", "u2net_odd")]
HEADS = ["outconv"] + [f"side{k}" for k in range(1, 7)]  # produce logit_0 … logit_6


def _close(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    tol = 1e-4 * max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(ours - ref).max())
    assert err <= tol, f"{what}: max |diff| {err:.3g} > {tol:.3g}"


@pytest.mark.parametrize("name", ["u2net", "u2netp"])
def test_state_dict_layout_equals_upstream_manifest(name):
    spec = get_spec(name)
    ours = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch."))
            for k, v in spec.build().state_dict().items()]
    assert ours == manifest(spec.manifest)  # keys, shapes, dtypes and order


@pytest.mark.parametrize("name,params", [("u2net", 44_009_869), ("u2netp", 1_131_181)])
def test_parameter_count(name, params):
    assert sum(p.numel() for p in get_spec(name).build().parameters()) == params


@pytest.mark.parametrize("name,fixture", CASES)
def test_outputs_equal_upstream(name, fixture):
    ref = np.load(GOLDEN / f"{fixture}.npz")
    model = create_model(name, "random", seed=int(ref["seed"]))
    logits = {}
    for i, head in enumerate(HEADS):
        getattr(model, head).register_forward_hook(
            lambda m, inp, out, i=i: logits.__setitem__(i, out.detach().numpy()))
    with torch.no_grad():
        outputs = model(torch.from_numpy(ref["input"]))
    assert isinstance(outputs, tuple) and len(outputs) == 7
    for i in range(7):
        _close(outputs[i].numpy(), ref[f"output_{i}"], f"{fixture} output_{i}")
        # Random weights saturate part of every sigmoid map; the pre-sigmoid head outputs
        # (d2..d6 before their resize) keep errors visible there.
        _close(logits[i], ref[f"logit_{i}"], f"{fixture} logit_{i}")


def test_odd_sizes_keep_input_resolution():
    model = create_model("u2netp", "random", seed=0)
    with torch.no_grad():
        outputs = model(torch.zeros(1, 3, 33, 47))
    assert [tuple(o.shape) for o in outputs] == [(1, 1, 33, 47)] * 7
    assert all(float(o.min()) >= 0.0 and float(o.max()) <= 1.0 for o in outputs)


def test_small_checkpoint_into_full_model_names_the_mismatch(tmp_path):
    path = tmp_path / "u2netp.pth"
    torch.save(random_state_dict(get_spec("u2netp").build(), seed=1), path)
    with pytest.raises(WeightsError) as info:
        create_model("u2net", path)
    message = str(info.value)
    assert str(path) in message
    assert "shape mismatch" in message and "stage1.rebnconv1.conv_s1.weight" in message
    assert "'u2netp'" in message  # suggests the model the file fits


def test_checkpoint_file_reproduces_its_model_and_accepts_module_prefix(tmp_path):
    source = create_model("u2netp", "random", seed=7)
    plain, wrapped = tmp_path / "plain.pth", tmp_path / "dataparallel.pth"
    torch.save(source.state_dict(), plain)
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, wrapped)
    x = torch.randn(1, 3, 40, 52, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = source(x)
        for path in (plain, wrapped):
            model = create_model("u2netp", path)
            assert model.segdeploy_weights.kind == "file"
            for got, want in zip(model(x), expected):
                assert torch.equal(got, want)


def test_onnx_export_with_dynamic_batch_and_size(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = create_model("u2netp", "random", seed=2)
    names = [f"d{i}" for i in range(7)]
    dynamic = {n: {0: "batch", 2: "height", 3: "width"} for n in ["input", *names]}
    path = tmp_path / "u2netp.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        # TorchScript exporter (about 1 s); the dynamo exporter also works but takes ~30 s here.
        torch.onnx.export(model, (torch.zeros(1, 3, 64, 64),), str(path), input_names=["input"],
                          output_names=names, dynamic_axes=dynamic, opset_version=17, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 45, 71)).astype(np.float32)  # not the traced size
    got = session.run(None, {"input": x})
    with torch.no_grad():
        want = model(torch.from_numpy(x))
    for g, w in zip(got, want):
        assert g.shape == (2, 1, 45, 71)
        assert np.abs(g - w.numpy()).max() < 1e-4

