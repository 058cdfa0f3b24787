"""int8 quantization: QDQ file, metadata, both CPU runtimes, fidelity reported by compare, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from segdeploy.convert.export_cache import cached_export  # noqa: E402
from segdeploy.convert.onnx_info import is_quantized, read_metadata  # noqa: E402
from segdeploy.convert.quantize import QuantizeOptions, cached_quantize, quantize_onnx  # noqa: E402
from segdeploy.backends import ArtifactOptions, available_backends, open_runtime  # noqa: E402

HAVE_OV = available_backends()["openvino"] is None



def _images(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    import cv2

    rng = np.random.default_rng(seed)
    return [cv2.resize(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8), (size + 4 * k, size),
                       interpolation=cv2.INTER_CUBIC) for k in range(n)]


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    from segdeploy.engine.writers import write_png

    folder = tmp_path_factory.mktemp("calib")
    for i, image in enumerate(_images(6, 64, seed=1)):
        write_png(folder / f"c{i}.png", image)
    return folder


@pytest.fixture(scope="module")
def u2netp_int8(calib_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "u2netp.int8.onnx"
    fp32 = cached_export("u2netp", "random", input_size=(64, 64))
    return quantize_onnx("u2netp", "random", calib_dir, out, QuantizeOptions(input_size=(64, 64), num_calib=4),
                         onnx_path=fp32)


def test_quantized_file_is_qdq_with_metadata(u2netp_int8):
    result = u2netp_int8
    model = onnx.load(result.path)
    onnx.checker.check_model(model)
    assert is_quantized(model) and result.quantized_nodes > 0
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    meta = read_metadata(result.path)
    assert meta["segdeploy_model"] == "u2netp"  # the fp32 export's entries are kept
    info = json.loads(meta["segdeploy_quantization"])
    assert info["num_calib"] == 4 and info["format"] == "QDQ" and info["calibrate_method"] == "minmax"
    assert info["weight_type"].endswith("per-channel")
    assert json.loads(open(result.path + ".json").read())["num_calib"] == 4


def test_int8_runs_on_plain_onnxruntime_session(u2netp_int8):
    session = ort.InferenceSession(u2netp_int8.path, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64), dtype=np.float32)
    out = session.run(None, {"input": x})
    assert len(out) == 7 and out[0].shape == (2, 1, 64, 64) and np.isfinite(out[0]).all()


@pytest.mark.skipif(not HAVE_OV, reason="needs openvino")
def test_int8_runs_on_openvino_in_int8(u2netp_int8):
    rt = open_runtime("u2netp", "openvino", precision="int8", onnx_path=u2netp_int8.path)
    out = rt.run(np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32))
    assert out[0].shape == (1, 1, 64, 64)
    precisions = rt.describe()["execution_precisions"]
    assert set(precisions) & {"u8", "i8"}, precisions  # convolutions really run in 8 bits


def test_compare_reports_int8_agreement_on_both_cpu_runtimes(u2netp_int8):
    from segdeploy.verify.compare import CompareOptions, compare

    combos = [("onnxruntime", "int8")] + ([("openvino", "int8")] if HAVE_OV else [])
    options = CompareOptions(combos=combos, input_size=(64, 64), int8_onnx=u2netp_int8.path, allow_few_images=True)
    report = compare("u2netp", "random", options, images=_images(4, 64, seed=2))
    for row in report.rows:
        assert row.judged == 4, row.reason  # measured (a verdict either way: random weights prove nothing)
        measures = row.summary["measures"]
        assert 0 < measures["map_mae"]["mean"] < 0.2 and 0.5 < measures["mask_iou"]["mean"] <= 1.0
        assert row.summary["tensors"]["d0"]["cosine_min"] > 0.9
        assert row.runtime["precision"] == "int8"


def test_open_runtime_quantizes_into_the_cache_from_calibration_images(calib_dir):
    from segdeploy.convert.export import spec_with_input_size
    from segdeploy.core.registry import get_spec

    spec = spec_with_input_size(get_spec("unetpp_dsb2018"), (32, 32))
    rt = open_runtime("unetpp_dsb2018", "onnxruntime", precision="int8", weights="random", spec=spec,
                      artifact=ArtifactOptions(export={"input_size": (32, 32)}, calib=calib_dir, num_calib=3))
    path = rt.describe()["onnx"]
    assert "-int8-" in path and rt.describe()["quantization"]["num_calib"] == 3
    again = cached_quantize(spec, "random", calib_dir, num_calib=3, spec=spec, export_options={"input_size": (32, 32)})
    assert str(again) == path


def test_calibration_errors_name_the_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no calibration images found"):
        quantize_onnx("u2netp", "random", empty, tmp_path / "x.onnx")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        quantize_onnx("u2netp", "random", tmp_path / "nowhere", tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="calibrate_method"):
        quantize_onnx("u2netp", "random", empty, tmp_path / "x.onnx", QuantizeOptions(calibrate_method="magic"))


def test_cli_quantize(tmp_path, calib_dir, capsys):
    from segdeploy.cli.main import main

    out = tmp_path / "q.onnx"
    code = main(["quantize", "unetpp_dsb2018", "--weights", "random", "--calib", str(calib_dir), "-o", str(out),
                 "--num-calib", "2", "--input-size", "32"])
    assert code == 0 and out.is_file() and is_quantized(out)
    assert "calibrated on 2 images" in capsys.readouterr().out
    assert main(["quantize", "unetpp_dsb2018", "--weights", "random", "--calib", str(tmp_path / "none"), "-o",
                 str(out)]) == 2  # a usage error, one line
    assert "--calib" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_OV, reason="needs openvino")
def test_nncf_int8_ir_runs_in_int8_and_keeps_ignored_convolutions_float(tmp_path, monkeypatch):
    pytest.importorskip("nncf")
    import openvino as ov

    from segdeploy.convert.nncf_quantize import cached_nncf_quantize, conv_names

    monkeypatch.setenv("SEGDEPLOY_CACHE", str(tmp_path))
    calib = _images(3, 40, seed=2)
    xml = cached_nncf_quantize("unetpp_dsb2018", "random", calib, num_calib=3)
    again = cached_nncf_quantize("unetpp_dsb2018", "random", calib, num_calib=3)
    assert again == xml and xml.suffix == ".xml" and xml.with_suffix(".bin").is_file()
    info = json.loads(xml.with_name(xml.name + ".json").read_text())
    assert info["method"] == "nncf" and info["calibration_images"] == 3 and info["ignored"] == []
    rt = open_runtime("unetpp_dsb2018", "openvino", precision="int8", onnx_path=xml)
    x = np.random.default_rng(0).standard_normal((1, 3, 96, 96), dtype=np.float32)
    assert rt.run(x)[0].shape == (1, 1, 96, 96)
    assert "u8" in rt.describe()["execution_precisions"] or "i8" in rt.describe()["execution_precisions"]
    # The IR still says which weights it carries (runs, manifests and /v1/models record them).
    assert rt.describe()["weights"]["kind"] == "random" and rt.describe()["weights"]["seed"] == 0
    # The mixed-precision fallback: the last convolution (the 1x1 classifier) stays float.
    mixed = cached_nncf_quantize("unetpp_dsb2018", "random", calib, num_calib=3, ignore_last=1)
    assert mixed != xml
    model = ov.Core().read_model(str(mixed))
    last = conv_names(model)[-1]
    fed_by_fq = [node.get_source_output().get_node().get_type_name()
                 for op in model.get_ordered_ops() if op.get_friendly_name() == last for node in op.inputs()]
    assert "FakeQuantize" not in fed_by_fq


def test_preparing_a_graph_symbolic_inference_cannot_finish_leaves_nothing_in_the_working_dir(tmp_path, monkeypatch):
    """ONNX Runtime's symbolic shape inference gives up on UNet++ (dynamic H/W) after writing a scratch
    model and its 36 MB of weights into the working directory; the preparation falls back to plain
    shape inference and removes them, and leaves a file the user had there alone."""
    from segdeploy.convert.ort_prepare import pre_process

    fp32 = cached_export("unetpp_dsb2018", "random")
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.data").write_bytes(b"the user's")
    monkeypatch.chdir(work)
    prepared = pre_process(fp32, tmp_path / "prepared.onnx")
    assert prepared == tmp_path / "prepared.onnx" and onnx.load(str(prepared)).graph.node
    assert sorted(p.name for p in work.iterdir()) == ["mine.data"]
