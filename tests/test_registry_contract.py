"""What every registered model and every registered backend promises, checked from the registries:
a new model family or backend (built in or a plugin) is tested here with no edit to this file.

Models: the state_dict layout equals its manifest (when it has one), its golden fixtures are found by
file name (``<name>.npz`` / ``<name>_<tag>.npz`` in tests/fixtures/golden) and reproduced, a forward
pass decodes to a prediction of the image's size, and its ONNX export passes compare's fp32 gate.
Backends: open, run (every output, float32, batch axis first), describe, and int8 where declared.
(Export parity of every model: tests/test_export.py.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from segdeploy.backends import ArtifactOptions, RuntimeUnavailable, backend_names, get_runtime_class, open_runtime
from segdeploy.core.registry import get_spec, list_models, register_model, unregister_model
from segdeploy.core.specs import Decode, ModelSpec, Preprocess
from segdeploy.engine.transforms import decode, preprocess_with_valid
from segdeploy.zoo import create_model
from tests.registry_params import model_params, small_size

GOLDEN = Path(__file__).parent / "fixtures" / "golden"


def golden_fixtures(name: str) -> list[Path]:
    """Fixtures of ``name``: ``name.npz`` or ``name_TAG.npz`` holding a seeded ``input`` and its
    ``output_<i>`` (not another model's whose name extends this one's; not fixtures of a variant
    such as a tempered head, which carry more keys)."""
    longer = [m for m in list_models() if m != name and m.startswith(name)]
    found = []
    for path in sorted(GOLDEN.glob(f"{name}*.npz")):
        stem = path.stem
        if stem != name and not stem.startswith(name + "_"):
            continue
        if any(stem == m or stem.startswith(m + "_") for m in longer):
            continue
        with np.load(path) as data:
            keys = set(data.files)
            # a head divided by 1 is the plain network (wseg_voc.npz records head_div = 1 beside a tempered variant)
            if "head_div" in keys and float(data["head_div"]) == 1.0:
                keys.discard("head_div")
        if {"input", "seed", "output_0"} <= keys and keys <= {"input", "seed"} | {
                f"{kind}_{i}" for kind in ("output", "logit") for i in range(16)}:
            found.append(path)
    return found


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.mark.parametrize("name", model_params())
def test_state_dict_layout_equals_the_manifest(name):
    from segdeploy.zoo.checkpoints import manifest

    spec = get_spec(name)
    if spec.manifest is None:
        pytest.skip(f"{name} registers no manifest")
    got = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in spec.build().state_dict().items()]
    assert got == manifest(spec.manifest)


@pytest.mark.parametrize("name", model_params())
def test_golden_fixtures_are_found_by_name_and_reproduced(name):
    fixtures = golden_fixtures(name)
    if get_spec(name).manifest is None and not fixtures:
        pytest.skip(f"{name} has no upstream layout and no golden fixture")
    assert fixtures, f"no tests/fixtures/golden/{name}.npz or {name}_TAG.npz"
    for path in fixtures:
        with np.load(path) as data:
            model = create_model(name, "random", seed=int(data["seed"]))
            with torch.no_grad():
                out = model(torch.from_numpy(data["input"]))
            outputs = list(out) if isinstance(out, (list, tuple)) else [out]
            for i in range(len(outputs)):
                if f"output_{i}" not in data.files:
                    continue
                ref = data[f"output_{i}"]
                got = outputs[i].numpy()
                assert got.shape == ref.shape, f"{path.name} output {i}"
                err = float(np.abs(got - ref).max())
                assert err <= 1e-4 * max(1.0, float(np.abs(ref).max())), f"{path.name} output {i}: error {err:.3g}"


@pytest.mark.parametrize("name", model_params())
def test_a_forward_pass_decodes_to_the_image_size(name):
    spec = get_spec(name)
    side = small_size(name)
    image = np.random.default_rng(0).integers(0, 256, (side - 5, side + 7, 3), dtype=np.uint8)
    chw, valid = preprocess_with_valid(image, spec)
    runtime = open_runtime(name, "torch", weights="random")
    outputs = runtime.run(chw[None])
    assert len(outputs) == len(spec.output_names) and all(o.dtype == np.float32 for o in outputs)
    prediction = decode([o[0] for o in outputs], spec, image.shape[:2], valid)
    assert prediction.mask.shape[:2] == image.shape[:2]


@pytest.mark.slow
@pytest.mark.parametrize("name", model_params())
def test_the_onnx_export_passes_compares_fp32_gate(name):
    from segdeploy.verify.compare import CompareOptions, compare

    if get_runtime_class("onnxruntime").is_available() is False:
        pytest.skip("onnxruntime is not installed")
    side = small_size(name)
    images = [np.random.default_rng(i).integers(0, 256, (side, side + 8, 3), dtype=np.uint8) for i in range(2)]
    options = CompareOptions(backends=["onnxruntime"], precisions=["fp32"], allow_few_images=True)
    report = compare(name, weights="random", options=options, images=images)
    assert [row.status for row in report.rows] == ["pass"], report.rows[0].failures


# ---------------------------------------------------------------------------------------- backends
TINY = "contract_tiny"


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 1))


@pytest.fixture
def tiny_model():
    register_model(ModelSpec(name=TINY, title="two-layer contract model", task="binary", num_classes=1,
                             builder=_tiny, input_size=(32, 32), output_names=("logits",),
                             preprocess=Preprocess(size=(32, 32), scaling="div255", mean=(0.5,) * 3, std=(0.5,) * 3),
                             decode=Decode(activation="sigmoid", threshold=0.5)))
    yield TINY
    unregister_model(TINY)


def _open_or_skip(backend: str, **kwargs):
    try:
        return open_runtime(TINY, backend, weights="random", **kwargs)
    except RuntimeUnavailable as exc:
        pytest.skip(f"{backend}: {exc}")


@pytest.mark.parametrize("backend", backend_names())
def test_backend_declares_what_callers_read(backend):
    cls = get_runtime_class(backend)
    assert cls.consumes in ("module", "onnx", "artifact")
    assert set(cls.devices) <= {"cpu", "cuda"} and cls.devices
    assert set(cls.int8_quantizers) <= {"nncf", "ort-qdq"}
    assert bool(cls.int8_quantizers) == ("int8" in cls.precisions)
    for kind, pairs in cls.auto_candidates.items():
        assert kind in cls.devices
        assert all(p in cls.precisions and (q is None) == (p != "int8") for p, q in pairs)
    assert (cls.consumes == "module") == (not cls.reads)


@pytest.mark.parametrize("backend", backend_names())
def test_backend_opens_runs_and_describes(backend, tiny_model):
    runtime = _open_or_skip(backend, precision="fp32")
    batch = np.random.default_rng(1).standard_normal((2, 3, 32, 32), dtype=np.float32)
    outputs = runtime.run(batch)
    assert [o.shape for o in outputs] == [(2, 1, 32, 32)] and outputs[0].dtype == np.float32
    reference = open_runtime(TINY, "torch", weights="random").run(batch)
    assert np.allclose(outputs[0], reference[0], atol=1e-4)
    info = runtime.describe()
    assert info["backend"] == backend and info.get("precision", "fp32") == "fp32"


@pytest.mark.parametrize("backend", [b for b in backend_names() if "int8" in get_runtime_class(b).precisions])
def test_backend_runs_int8_where_declared(backend, tiny_model):
    cls = get_runtime_class(backend)
    if cls.int8_quantizer() is None:
        pytest.skip(f"{backend}: none of {cls.int8_quantizers} is installed")
    calib = [np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8) for i in range(4)]
    runtime = _open_or_skip(backend, precision="int8", artifact=ArtifactOptions(calib=calib))
    out = runtime.run(np.random.default_rng(2).standard_normal((1, 3, 32, 32), dtype=np.float32))
    assert out[0].shape == (1, 1, 32, 32) and np.isfinite(out[0]).all()
    assert runtime.describe()["precision"] == "int8"
