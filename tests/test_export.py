"""ONNX export: graph, metadata, dynamic axes, parity, atomic writes, cache."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from segdeploy.convert.export import ExportOptions, ExportParityError, export_onnx, sidecar_path  # noqa: E402
from segdeploy.convert.export_cache import cached_export  # noqa: E402
from segdeploy.convert.onnx_info import is_quantized, read_metadata  # noqa: E402
from segdeploy.zoo import create_model  # noqa: E402
from segdeploy.core.specs import Decode, ModelSpec, Preprocess  # noqa: E402
from segdeploy.core.registry import get_spec, list_models

from tests.registry_params import model_params, small_size  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _own_export_cache(tmp_path_factory):
    """Every model here has dynamic spatial axes, so the cache key leaves the traced size out: an
    export another test made at 320x320 would stand in for the small one these tests trace and
    record. A cache of this module's own makes what is checked the export these tests asked for."""
    previous = os.environ["SEGDEPLOY_CACHE"]
    os.environ["SEGDEPLOY_CACHE"] = str(tmp_path_factory.mktemp("export-tests-cache"))
    yield
    os.environ["SEGDEPLOY_CACHE"] = previous


def _torch_outputs(module, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(torch.from_numpy(x))
    return [t.numpy() for t in (out if isinstance(out, (tuple, list)) else [out])]


def _rel(ref: np.ndarray, out: np.ndarray) -> float:
    return float(np.abs(ref - out).max() / np.abs(ref).max())



@pytest.fixture(scope="module")
def u2netp_export():
    """The cached u2netp export at 64x64 and its record."""
    path = cached_export("u2netp", "random", input_size=(64, 64))
    return path, json.loads(sidecar_path(path).read_text())


def test_export_writes_checked_graph_with_spec_metadata(u2netp_export):
    path, record = u2netp_export
    spec = get_spec("u2netp")
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert record["opset"] == 17 and any(o.version == 17 for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert record["exporter"] == "torchscript"
    assert [o.name for o in model.graph.output] == list(spec.output_names)
    assert record["simplified"] and record["nodes_after"] < record["nodes_before"]
    meta = read_metadata(path)
    assert meta == record["metadata"]
    assert meta["segdeploy_model"] == "u2netp"
    assert Preprocess(**{k: tuple(v) if isinstance(v, list) else v
                         for k, v in json.loads(meta["segdeploy_preprocess"]).items()}) == spec.preprocess
    assert Decode(**json.loads(meta["segdeploy_decode"])) == spec.decode
    assert json.loads(meta["segdeploy_weights"]) == {"kind": "random", "sha256": None, "seed": 0, "path": None}
    assert meta["segdeploy_opset"] == "17" and meta["segdeploy_version"]
    assert not is_quantized(model)


def test_export_has_symbolic_batch_and_spatial_axes(u2netp_export):
    model = onnx.load(str(u2netp_export[0]))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    out_dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert out_dims[0] == "batch" and out_dims[2:] == ["height", "width"]


def test_export_parity_record_and_sidecar(u2netp_export):
    path, record = u2netp_export
    parity = record["parity"]
    assert record["written"] is True and parity["passed"] is True
    assert parity["input_shape"] == [2, 3, 64, 64]
    assert [o["name"] for o in parity["outputs"]] == list(get_spec("u2netp").output_names)
    assert parity["max_rel"] == max(o["rel"] for o in parity["outputs"])
    assert parity["max_rel"] < 1e-4 and parity["min_cosine"] > 0.99999
    assert record["file_bytes"] == os.path.getsize(path)
    assert record["environment"]["packages"]["onnxruntime"] == ort.__version__


def test_exported_file_runs_in_plain_onnxruntime_at_batch_1_and_2_and_other_sizes(u2netp_export):
    module = create_model("u2netp", "random")
    session = ort.InferenceSession(str(u2netp_export[0]), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    for shape in [(1, 3, 64, 64), (2, 3, 64, 64), (1, 3, 64, 96)]:
        x = rng.standard_normal(shape, dtype=np.float32)
        got = session.run(None, {"input": x})
        ref = _torch_outputs(module, x)
        assert [g.shape for g in got] == [r.shape for r in ref]
        for name, r, g in zip(get_spec("u2netp").output_names, ref, got):
            # Random-weight U²-Netp's side output d6 saturates (values < 4e-5 at 96x128), where ONNX
            # Runtime's approximate sigmoid (~1e-7 absolute) reads as a large relative error: the
            # compare gate accepts absolute errors <= 1e-6 for that reason.
            assert _rel(r, g) < 1e-4 or np.abs(r - g).max() <= 1e-6, (shape, name, _rel(r, g))


class _Tiny(torch.nn.Module):
    """A two-output toy: conv + ceil-mode pool + bilinear resize back to the input size."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.head = torch.nn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        z = torch.nn.functional.max_pool2d(y, 2, ceil_mode=True)
        z = torch.nn.functional.interpolate(z, size=x.shape[2:], mode="bilinear", align_corners=False)
        logits = self.head(y + z)
        return logits, torch.amax(logits, dim=(2, 3))


TINY_SPEC = ModelSpec(name="tiny", title="toy", task="binary", num_classes=2, builder="x:y", builder_kwargs={},
                      preprocess=Preprocess(size=(20, 28)), decode=Decode(activation="softmax"),
                      input_size=(20, 28), source="tests", license="Apache-2.0", manifest="",
                      output_names=("logits", "score"))


def _nearest_resizes(model) -> int:
    """Turn every linear Resize into nearest (a deliberately wrong conversion); returns how many."""
    count = 0
    for node in model.graph.node:
        if node.op_type == "Resize":
            for attr in node.attribute:
                if attr.name == "mode" and attr.s == b"linear":
                    attr.s = b"nearest"
                    count += 1
    return count


def test_parity_failure_writes_no_onnx_and_names_the_output(tmp_path, monkeypatch):
    import onnxslim

    real_slim = onnxslim.slim

    def broken_slim(model, *args, **kwargs):  # a simplifier that silently changes the resampling
        slimmed = real_slim(model, *args, **kwargs)
        assert _nearest_resizes(slimmed) > 0
        return slimmed

    monkeypatch.setattr(onnxslim, "slim", broken_slim)
    out = tmp_path / "bad.onnx"
    torch.manual_seed(0)
    with pytest.raises(ExportParityError) as info:
        export_onnx(_Tiny().eval(), None, out, spec=TINY_SPEC)
    assert "'logits' relative error" in str(info.value)
    assert info.value.result.parity.max_rel > 1e-2
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx.json"]  # the record, no temp files
    assert json.loads((tmp_path / "bad.onnx.json").read_text())["written"] is False


def test_export_rejects_sizes_the_network_cannot_take(tmp_path):
    with pytest.raises(ValueError, match="divisible by 16"):
        export_onnx("unetpp_dsb2018", "random", tmp_path / "x.onnx", ExportOptions(input_size=(40, 40)))


def test_static_export_fixes_the_axes(tmp_path):
    options = ExportOptions(input_size=(24, 40), dynamic_batch=False, dynamic_spatial=False)
    result = export_onnx(_Tiny().eval(), None, tmp_path / "s.onnx", options, spec=TINY_SPEC)
    dims = [d.dim_param or d.dim_value for d in onnx.load(result.path).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 24, 40]
    assert result.dynamic_axes == {} and result.parity.passed


def test_export_of_a_plain_module_with_its_own_spec(tmp_path):
    torch.manual_seed(0)
    module = _Tiny().eval()
    result = export_onnx(module, None, tmp_path / "tiny.onnx", spec=TINY_SPEC)
    assert result.parity.passed and result.output_names == ("logits", "score")
    assert json.loads(result.metadata["segdeploy_weights"])["kind"] == "module"
    # "score" has no spatial axes: only its batch axis is symbolic.
    assert result.dynamic_axes["score"] == {0: "batch"}
    session = ort.InferenceSession(result.path, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 3, 17, 33), dtype=np.float32)  # odd sizes
    for ref, got in zip(_torch_outputs(module, x), session.run(None, {"input": x})):
        assert _rel(ref, got) < 1e-4


def test_cached_export_is_reused_and_rebuilt_when_invalid(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGDEPLOY_CACHE", str(tmp_path))
    torch.manual_seed(0)
    module = _Tiny().eval()
    first = cached_export(module, spec=TINY_SPEC)
    # A module without a weights record is named by a hash of its state_dict.
    assert first.parent == tmp_path / "onnx" and first.name.startswith("tiny-sd") and "-opset17-" in first.name
    stamp = first.stat().st_mtime_ns
    assert cached_export(module, spec=TINY_SPEC) == first
    assert first.stat().st_mtime_ns == stamp  # reused, not re-exported
    saved = module.head.bias.detach().clone()
    with torch.no_grad():
        module.head.bias += 1.0
    assert cached_export(module, spec=TINY_SPEC) != first  # other weights, other file
    sidecar_path(first).write_text("{ truncated")  # a broken record means a re-export
    with torch.no_grad():
        module.head.bias.copy_(saved)
    assert cached_export(module, spec=TINY_SPEC) == first
    assert json.loads(sidecar_path(first).read_text())["written"] is True
    assert first.stat().st_mtime_ns != stamp


def test_a_tampered_cached_export_is_reported_then_rebuilt(tmp_path, monkeypatch, capsys):
    """Issue 23: the cache is evidence. A cached ONNX whose bytes changed after it was written and
    parity-checked is said on stderr, then exported again (never run as it is)."""
    monkeypatch.setenv("SEGDEPLOY_CACHE", str(tmp_path))
    torch.manual_seed(0)
    module = _Tiny().eval()
    first = cached_export(module, spec=TINY_SPEC)
    capsys.readouterr()
    good = first.read_bytes()
    first.write_bytes(good[:-8] + bytes(8))  # a few bytes flipped: still a file, not the checked one
    again = cached_export(module, spec=TINY_SPEC)
    err = capsys.readouterr().err
    assert again == first and first.name in err and "sha256" in err and "exporting it again" in err
    assert first.read_bytes() == good  # the export is deterministic: the checked file is back
    cached_export(module, spec=TINY_SPEC)
    assert capsys.readouterr().err == ""  # intact: reused without a word


def test_weights_tags_name_the_weights():
    from segdeploy.convert.fingerprints import weights_tag

    assert weights_tag({"kind": "random", "seed": 3}) == "random3"
    assert weights_tag({"kind": "file", "sha256": "ab" * 32}) == "ab" * 6


def test_missing_weights_explain_how_to_get_them(tmp_path):
    from segdeploy.zoo.checkpoints import WeightsError

    # u2net's weights do not ship with the package (u2netp's do: None means them)
    with pytest.raises(WeightsError, match="random"):
        cached_export("u2net", None)
    with pytest.raises(WeightsError, match="no such weights file"):
        cached_export("u2net", tmp_path / "nope.pth")


@pytest.mark.parametrize("name", model_params())
def test_every_registry_model_exports_with_parity(name, tmp_path_factory):
    """Exported graph == PyTorch on a seeded batch of 2 (the export gate) and at batch 1."""
    size = small_size(name)
    path = cached_export(name, "random", input_size=(size, size))
    side = json.loads(sidecar_path(path).read_text())
    assert side["parity"]["passed"] and side["opset"] == 17
    assert side["parity"]["max_rel"] < 1e-3
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(7).standard_normal((1, 3, size, size), dtype=np.float32)
    got = session.run(None, {"input": x})
    assert [o.name for o in session.get_outputs()] == list(get_spec(name).output_names)
    assert all(g.shape[0] == 1 and np.isfinite(g).all() for g in got)


def test_dynamo_exporter_writes_opset_18_with_parity(tmp_path):
    torch.manual_seed(0)
    module = _Tiny().eval()
    result = export_onnx(module, None, tmp_path / "d.onnx", ExportOptions(exporter="dynamo"), spec=TINY_SPEC)
    assert result.exporter == "dynamo" and result.opset == 18  # it implements opset >= 18 only
    assert result.parity.passed and result.parity.max_rel < 1e-4
    session = ort.InferenceSession(result.path, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 3, 24, 36), dtype=np.float32)
    for ref, got in zip(_torch_outputs(module, x), session.run(None, {"input": x})):
        assert _rel(ref, got) < 1e-4
