"""Runtimes: protocol, registry, precisions, unavailability errors, describe()."""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from segdeploy.backends import (  # noqa: E402
    ArtifactOptions,
    RuntimeUnavailable,
    available_backends,
    backend_names,
    get_runtime_class,
    open_runtime,
    physical_cores,
    select_auto,
)
from segdeploy.core.registry import get_spec  # noqa: E402

CUDA = torch.cuda.is_available()
SPEC = get_spec("u2netp")



def _needs(backend: str) -> None:
    reason = available_backends()[backend]
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 3, 64, 64), dtype=np.float32)


@pytest.fixture(scope="module")
def reference(batch):
    rt = open_runtime("u2netp", "torch", weights="random")
    return rt.run(batch)


@pytest.fixture(scope="module")
def onnx_path():
    from segdeploy.convert.export_cache import cached_export

    return cached_export("u2netp", "random", input_size=(64, 64))


def _rel(ref, out) -> float:
    return float(np.abs(ref - out).max() / np.abs(ref).max())


def test_registry_lists_the_three_backends():
    assert backend_names() == ["torch", "onnxruntime", "openvino"]
    with pytest.raises(ValueError, match="unknown backend"):
        get_runtime_class("tensorflow")


def test_torch_runtime_outputs_follow_the_spec(reference):
    assert len(reference) == len(SPEC.output_names)
    assert all(o.dtype == np.float32 and o.shape == (2, 1, 64, 64) for o in reference)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_onnx_backends_match_torch_in_fp32(backend, batch, reference, onnx_path):
    _needs(backend)
    rt = open_runtime("u2netp", backend, onnx_path=onnx_path)
    rt.warmup(batch.shape)
    outputs = rt.run(batch)
    assert [o.dtype for o in outputs] == [np.float32] * 7
    for ref, out in zip(reference, outputs):
        assert _rel(ref, out) < 1e-4 or np.abs(ref - out).max() <= 1e-6
    # Batch 1 through the same dynamic-batch model.
    single = rt.run(batch[:1])
    assert single[0].shape == (1, 1, 64, 64)


def test_onnx_backends_export_into_the_cache_without_onnx_path(batch, reference, onnx_path):
    _needs("onnxruntime")
    rt = open_runtime("u2netp", "onnxruntime", weights="random",
                      artifact=ArtifactOptions(export={"input_size": (64, 64)}))
    assert rt.describe()["onnx"] == str(onnx_path)  # the valid cached export is reused
    assert _rel(reference[0], rt.run(batch)[0]) < 1e-4


def test_onnxruntime_describe_reports_provider_threads_and_weights(onnx_path):
    _needs("onnxruntime")
    import onnxruntime as ort

    info = open_runtime("u2netp", "onnxruntime", onnx_path=onnx_path).describe()
    assert info["providers"] == ["CPUExecutionProvider"]
    assert info["onnxruntime"] == ort.__version__
    assert info["intra_op_threads"] == physical_cores() >= 1
    assert info["precision"] == "fp32" and info["weights"]["kind"] == "random"
    assert open_runtime("u2netp", "onnxruntime", onnx_path=onnx_path, threads=1).describe()["intra_op_threads"] == 1


def test_onnxruntime_cuda_without_provider_is_unavailable(onnx_path):
    _needs("onnxruntime")
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this install has the CUDA provider")
    with pytest.raises(RuntimeUnavailable, match="no CUDAExecutionProvider in this install.*install onnxruntime-gpu"):
        open_runtime("u2netp", "onnxruntime", device="cuda", onnx_path=onnx_path)


def test_unavailable_combinations_raise_with_reasons(onnx_path):
    _needs("onnxruntime")
    with pytest.raises(RuntimeUnavailable, match="bf16"):
        open_runtime("u2netp", "onnxruntime", precision="bf16", onnx_path=onnx_path)
    with pytest.raises(RuntimeUnavailable, match="int8"):
        open_runtime("u2netp", "torch", precision="int8", weights="random")
    if not CUDA:
        with pytest.raises(RuntimeUnavailable, match="no CUDA device"):
            open_runtime("u2netp", "torch", device="cuda", weights="random")
    if available_backends()["openvino"] is None:
        with pytest.raises(RuntimeUnavailable, match="CPU only"):
            open_runtime("u2netp", "openvino", device="cuda", onnx_path=onnx_path)


def test_bad_arguments_are_value_errors(onnx_path):
    with pytest.raises(ValueError, match="unknown option"):
        open_runtime("u2netp", "torch", weights="random", turbo=True)
    with pytest.raises(ValueError, match="unknown precision"):
        open_runtime("u2netp", "torch", precision="fp8", weights="random")
    with pytest.raises(ValueError, match="unknown device"):
        open_runtime("u2netp", "torch", device="tpu", weights="random")
    with pytest.raises(ValueError, match="torch backend runs the PyTorch module"):
        open_runtime("u2netp", "torch", weights="random", onnx_path=onnx_path)
    _needs("onnxruntime")
    with pytest.raises(ValueError, match="needs a quantized ONNX"):
        open_runtime("u2netp", "onnxruntime", precision="int8", onnx_path=onnx_path)
    with pytest.raises(ValueError, match="calibration images"):
        open_runtime("u2netp", "onnxruntime", precision="int8", weights="random")
    with pytest.raises(FileNotFoundError):
        open_runtime("u2netp", "onnxruntime", onnx_path="/nonexistent.onnx")


def test_run_checks_the_batch(onnx_path):
    rt = open_runtime("unetpp_dsb2018", "torch", weights="random")
    with pytest.raises(ValueError, match="divisible by 16"):
        rt.run(np.zeros((1, 3, 40, 40), np.float32))
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        rt.run(np.zeros((3, 32, 32), np.float32))


def test_openvino_precision_is_explicit_and_read_back(batch, reference, onnx_path):
    _needs("openvino")
    fp32 = open_runtime("u2netp", "openvino", onnx_path=onnx_path)
    fp32.run(batch)
    info = fp32.describe()
    assert info["requested_config"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert info["inference_precision"] == "f32"
    assert set(info["execution_precisions"]) == {"f32"}  # no layer silently in bf16
    try:
        bf16 = open_runtime("u2netp", "openvino", precision="bf16", onnx_path=onnx_path)
    except RuntimeUnavailable as exc:
        pytest.skip(str(exc))
    out = bf16.run(batch)
    info = bf16.describe()
    assert info["inference_precision"] == "bf16" and "bf16" in info["execution_precisions"]
    # bf16 keeps ~3 significant digits: close to fp32, but not equal to it.
    assert 1e-5 < float(np.abs(out[0] - reference[0]).max()) < 0.2


def test_openvino_static_shape_mode_compiles_per_shape(batch, reference, onnx_path):
    _needs("openvino")
    rt = open_runtime("u2netp", "openvino", onnx_path=onnx_path, shape_mode="static", performance_hint="throughput")
    a = rt.run(batch)
    b = rt.run(batch[:1])
    assert len(rt._compiled) == 2
    assert _rel(reference[0], a[0]) < 1e-4 and b[0].shape == (1, 1, 64, 64)
    assert rt.describe()["performance_hint"] == "THROUGHPUT"


def test_torch_options_keep_fp32_results():
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32), dtype=np.float32)
    ref = open_runtime("unetpp_dsb2018", "torch", weights="random").run(x)[0]
    rt = open_runtime("unetpp_dsb2018", "torch", weights="random", channels_last=True)
    assert _rel(ref, rt.run(x)[0]) < 1e-5
    info = rt.describe()
    assert info["channels_last"] is True and info["precision"] == "fp32" and info["weights"]["kind"] == "random"


def test_torch_bf16_autocast_on_cpu(batch, reference):
    try:
        rt = open_runtime("u2netp", "torch", precision="bf16", weights="random")
    except RuntimeUnavailable as exc:
        pytest.skip(str(exc))
    out = rt.run(batch)
    assert out[0].dtype == np.float32
    assert 0 < float(np.abs(out[0] - reference[0]).max()) < 0.2
    assert rt.describe()["cast"] == "autocast"


def test_a_module_passed_in_is_not_modified():
    from segdeploy.zoo import create_model

    module = create_model("unetpp_dsb2018", "random")
    try:
        open_runtime(module, "torch", precision="bf16", cast="half")
    except RuntimeUnavailable:
        pytest.skip("bf16 half cast unavailable on this CPU build")
    assert next(module.parameters()).dtype == torch.float32


def test_select_auto_picks_something_that_opens():
    backend, precision = select_auto("u2netp", device="cpu")
    get_runtime_class(backend).check("cpu", precision, {})
    assert select_auto("u2netp", device="cpu", precision="fp32")[1] == "fp32"


def test_physical_cores_is_positive():
    assert 1 <= physical_cores() <= (os.cpu_count() or 1)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize(
    "precision,options",
    [("fp16", {}), ("bf16", {}), ("fp16", {"channels_last": True, "cast": "half"}), ("fp16", {"cuda_graph": True})],
)
def test_torch_cuda_precisions_pass_compare(precision, options):
    from segdeploy.verify.compare import CompareOptions, compare

    images = [np.random.default_rng(i).integers(0, 256, (64, 80, 3), dtype=np.uint8) for i in range(4)]
    compare_options = CompareOptions(backends=["torch"], precisions=[precision], device="cuda", input_size=(64, 64),
                                     runtime_options={"torch": options}, allow_few_images=True)
    report = compare("u2netp", "random", compare_options, images=images)
    row = report.rows[0]
    assert row.status == "pass", (row.failures, row.reason)
    assert row.runtime["device"] == "cuda"


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_torch_cuda_compiled_passes_compare():
    from segdeploy.verify.compare import CompareOptions, compare

    images = [np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8) for i in range(2)]
    options = CompareOptions(backends=["torch"], precisions=["fp16"], device="cuda", input_size=(64, 64),
                             allow_few_images=True,
                             runtime_options={"torch": {"compile": True, "compile_mode": "default"}})
    report = compare("unetpp_dsb2018", "random", options, images=images)
    assert report.rows[0].status == "pass", report.rows[0].failures


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_fp32_is_fp32_and_tf32_is_its_own_precision():
    import torch

    from segdeploy.backends import open_runtime

    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
    fp32 = open_runtime("unetpp_dsb2018", "torch", device="cuda", precision="fp32", weights="random")
    fp32.run(x)
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert fp32.describe()["tf32"] is False
    tf32 = open_runtime("unetpp_dsb2018", "torch", device="cuda", precision="tf32", weights="random")
    tf32.run(x)
    assert torch.backends.cudnn.allow_tf32 and tf32.describe()["tf32"] is True


def test_tf32_is_unavailable_on_the_cpu():
    from segdeploy.backends import RuntimeUnavailable, get_runtime_class

    with pytest.raises(RuntimeUnavailable, match="tf32 is a CUDA precision"):
        get_runtime_class("torch").check("cpu", "tf32", {})


def test_openvino_reads_its_own_ir_too(tmp_path, batch, reference, onnx_path):
    _needs("openvino")
    import openvino as ov

    xml = tmp_path / "u2netp.xml"
    ov.save_model(ov.Core().read_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    rt = open_runtime("u2netp", "openvino", onnx_path=xml)
    assert _rel(reference[0], rt.run(batch)[0]) < 1e-4
    with pytest.raises(ValueError, match="needs a quantized model"):
        open_runtime("u2netp", "openvino", precision="int8", onnx_path=xml)


def test_openvino_streams_take_concurrent_calls(batch, reference, onnx_path):
    """streams=N: N infer requests, N calls at once from threads, each with its own correct result."""
    _needs("openvino")
    import threading

    rt = open_runtime("u2netp", "openvino", onnx_path=onnx_path, streams=2)
    assert rt.concurrent_calls == 2
    inputs = [batch[i % len(batch)][None] * (1 + 0.1 * i) for i in range(8)]
    expected = [rt.run(x)[0] for x in inputs]
    got: dict[int, np.ndarray] = {}

    def call(i):
        got[i] = rt.run(inputs[i])[0]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(got[i], expected[i]) for i in range(8))
    info = rt.describe()
    assert info["streams"] == 2 and info["concurrent_calls"] == 2 and info["performance_hint"] == "THROUGHPUT"
    assert open_runtime("u2netp", "openvino", onnx_path=onnx_path).concurrent_calls == 1
