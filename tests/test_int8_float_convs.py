"""int8 keeps float the convolutions a model is known to need float (ModelSpec.int8_float_layers), and OpenVINO runs
an int8 model's float layers in f32: together they bring the trained U²-Netp's int8 inside the gate
(benchmarks/results/int8_trained_u2netp_cpu.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from segdeploy.backends import available_backends  # noqa: E402
from segdeploy.convert.quantize import QuantizeOptions, float_convs, quantize_onnx  # noqa: E402
from segdeploy.core.registry import get_spec  # noqa: E402

HAVE_OV = available_backends()["openvino"] is None


def test_float_convs_match_onnx_and_openvino_names_of_the_model_only():
    names = ["/stage2d/rebnconv1d/conv_s1/Conv", "/stage2d/rebnconv1d/conv_s1/Conv_output_0/WithoutBiases",
             "/stage2d/rebnconv2d/conv_s1/Conv", "/stage1d/rebnconv1d/conv_s1/Conv"]
    assert float_convs(get_spec("u2netp"), names) == names[:2]
    assert float_convs(get_spec("unetpp_dsb2018"), names) == []
    assert get_spec("unetpp_dsb2018").int8_float_layers == ()


def test_qdq_model_leaves_u2netp_stage2d_rebnconv1d_float(tmp_path):
    from segdeploy.convert.export_cache import cached_export

    rng = np.random.default_rng(0)
    calib = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    fp32 = cached_export("u2netp", "random", input_size=(64, 64))
    options = QuantizeOptions(input_size=(64, 64), num_calib=2)
    result = quantize_onnx("u2netp", "random", calib, tmp_path / "q.onnx", options, onnx_path=fp32)
    info = json.loads(result.metadata["segdeploy_quantization"])
    assert [n for n in info["float_nodes"] if "/stage2d/rebnconv1d/" in n] == info["float_nodes"] != []
    graph = onnx.load(result.path).graph
    producer = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.op_type == "Conv":
            weight_from = producer.get(node.input[1])
            quantized = weight_from is not None and weight_from.op_type == "DequantizeLinear"
            assert quantized == (node.name not in info["float_nodes"]), node.name


@pytest.mark.skipif(not HAVE_OV, reason="needs openvino")
def test_openvino_int8_runs_its_float_layers_in_f32_by_default():
    from segdeploy.backends.openvino_backend import OpenVINORuntime

    spec = get_spec("u2netp")
    assert OpenVINORuntime(spec, precision="int8").int8_rest == "f32"
    assert OpenVINORuntime(spec, precision="int8", int8_rest="bf16").int8_rest == "bf16"


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_OV, reason="needs openvino")
def test_trained_u2netp_nncf_int8_passes_the_gate_on_real_photos(tmp_path, monkeypatch):
    """Official weights, 16 real photos judged, NNCF calibrated on 16 other crops (~40 s, 1 thread)."""
    pytest.importorskip("nncf")
    from tests import trained_u2netp as tu

    from segdeploy.backends import open_runtime
    from segdeploy.convert.nncf_quantize import cached_nncf_quantize
    from segdeploy.verify.compare import CompareOptions, compare

    monkeypatch.setenv("SEGDEPLOY_CACHE", str(tmp_path / "cache"))
    spec = get_spec("u2netp")
    module = tu.trained_u2netp()
    module.segdeploy_spec = spec
    photos = tu.real_photos()
    xml = cached_nncf_quantize(module, None, [im for _, im in photos[16:]], num_calib=16)
    assert any("/stage2d/rebnconv1d/" in n for n in json.loads(open(str(xml) + ".json").read())["ignored"])
    runtime = open_runtime(module, backend="openvino", precision="int8", onnx_path=xml, spec=spec, threads=1)
    report = compare(module, options=CompareOptions(combos=[]), runtimes=[runtime],
                     images=[im for _, im in photos[:16]])
    row = report.rows[0]
    assert row.status == "pass", row.failures
    assert row.summary["measures"]["mask_iou"]["quantile"] >= 0.9


@pytest.mark.skipif(not HAVE_OV, reason="needs openvino")
def test_openvino_int8_from_calibration_images_is_an_nncf_ir(tmp_path, monkeypatch):
    pytest.importorskip("nncf")
    from segdeploy.backends import ArtifactOptions, open_runtime
    from segdeploy.convert.export import spec_with_input_size

    monkeypatch.setenv("SEGDEPLOY_CACHE", str(tmp_path))
    spec = spec_with_input_size(get_spec("unetpp_dsb2018"), (32, 32))
    rng = np.random.default_rng(1)
    calib = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2)]
    rt = open_runtime("unetpp_dsb2018", "openvino", precision="int8", weights="random", spec=spec,
                      artifact=ArtifactOptions(export={"input_size": (32, 32)}, calib=calib, num_calib=2))
    assert rt.describe()["onnx"].endswith(".xml")
    assert rt.run(np.zeros((1, 3, 32, 32), np.float32))[0].shape == (1, 1, 32, 32)
