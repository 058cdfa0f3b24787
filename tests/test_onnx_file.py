"""Bring your own ONNX: files made outside segdeploy run with a registry model's pre/post-processing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from segdeploy.backends import available_backends, open_runtime
from segdeploy.backends.onnx_file import check_onnx_file, inspect_onnx
from segdeploy.core.errors import UsageError
from segdeploy.core.registry import get_spec
from segdeploy.engine.transforms import preprocess
from segdeploy.zoo import create_model

pytestmark = pytest.mark.skipif(available_backends()["onnxruntime"] is not None, reason="onnxruntime missing")
REMBG_ONNX = Path(os.environ.get("SEGDEPLOY_SHARED", Path(__file__).resolve().parents[2] / "shared")) \
    / "weights" / "u2netp_rembg.onnx"


@pytest.fixture(scope="module")
def foreign_onnx(tmp_path_factory):
    """U²-Netp exported the way other tools do: plain torch.onnx.export in eval mode (BatchNorm
    folded into the convolutions), static batch 1 at 320², own tensor names, no metadata."""
    module = create_model("u2netp", "random", seed=3)
    path = tmp_path_factory.mktemp("foreign") / "u2netp_plain.onnx"
    with torch.no_grad():
        torch.onnx.export(module, torch.zeros(1, 3, 320, 320), str(path), input_names=["input.1"],
                          output_names=[f"out{i}" for i in range(7)], opset_version=17, do_constant_folding=True,
                          dynamo=False)
    return module, path


def _images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (90 + 10 * i, 120, 3), dtype=np.uint8) for i in range(n)]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_foreign_file_runs_with_the_models_processing(foreign_onnx, backend):
    if available_backends()[backend] is not None:
        pytest.skip(f"{backend} missing")
    module, path = foreign_onnx
    info = inspect_onnx(path)
    assert info.static_batch == 1 and info.static_hw == (320, 320) and not info.metadata
    assert not any(n.op_type == "BatchNormalization" for n in __import__("onnx").load(str(path)).graph.node)
    batch = np.stack([preprocess(image, "u2netp") for image in _images(3)])
    runtime = open_runtime("u2netp", backend, onnx_path=path)
    got = runtime.run(batch)  # a batch of 3 through a file fixed at batch 1
    with torch.no_grad():
        want = [t.numpy() for t in module(torch.from_numpy(batch))]
    assert len(got) == 7
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert np.abs(g - w).max() < 1e-4
    assert runtime.describe()["static_batch"] == 1


def test_auto_runs_a_given_file_on_an_onnx_runtime(foreign_onnx):
    runtime = open_runtime("u2netp", onnx_path=foreign_onnx[1])
    assert runtime.selection["backend"] in ("openvino", "onnxruntime")
    assert runtime.selection["precision"] == "fp32"


def test_file_that_does_not_fit_is_refused_by_name(foreign_onnx):
    path = foreign_onnx[1]
    with pytest.raises(UsageError, match="runs at each image's own size"):
        check_onnx_file(inspect_onnx(path), get_spec("unet_carvana"))
    with pytest.raises(UsageError, match="preprocesses to 96x96"):
        check_onnx_file(inspect_onnx(path), get_spec("unetpp_dsb2018"))
    with pytest.raises(UsageError, match="torch backend"):
        open_runtime("u2netp", "torch", onnx_path=path)
    with pytest.raises(UsageError, match="no such ONNX file"):
        inspect_onnx(path.with_name("missing.onnx"))
    bogus = path.with_name("bogus.onnx")
    bogus.write_bytes(b"not a protobuf at all")
    with pytest.raises(UsageError, match="not a readable ONNX file"):
        inspect_onnx(bogus)


@pytest.mark.skipif(not REMBG_ONNX.is_file(), reason=f"{REMBG_ONNX} not present")
def test_rembg_file_as_users_keep_it():
    info = inspect_onnx(REMBG_ONNX)
    assert info.input_name == "input.1" and info.output_names[0] == "1959"
    runtime = open_runtime("u2netp", "onnxruntime", onnx_path=REMBG_ONNX)
    outputs = runtime.run(np.stack([preprocess(image, "u2netp") for image in _images(2)]))
    assert [o.shape for o in outputs] == [(2, 1, 320, 320)] * 7
    assert 0.0 <= outputs[0].min() and outputs[0].max() <= 1.0  # sigmoid maps
