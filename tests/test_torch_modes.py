"""The torch backend's modes and CUDA helpers, exercised on the CPU where their logic does not need a GPU."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from segdeploy.backends import open_runtime  # noqa: E402
from segdeploy.backends.torch_backend import resolve_mode  # noqa: E402
from segdeploy.backends.torch_cuda import GraphCache, Staging, batch_bucket  # noqa: E402


def test_graph_cache_is_bounded_lru_and_hands_evictions_over():
    evicted = []
    cache = GraphCache(2, on_evict=lambda key, value: evicted.append(key))
    cache.put((1,), "a")
    cache.put((2,), "b")
    assert cache.get((1,)) == "a"  # (1,) becomes the most recent
    cache.put((3,), "c")
    assert evicted == [(2,)] and cache.keys() == [(1,), (3,)] and cache.evictions == 1
    assert cache.get((2,)) is None and len(cache) == 2
    with pytest.raises(ValueError):
        GraphCache(0)


def test_batch_bucket_pads_up_to_the_next_bucket():
    assert batch_bucket(3, (1, 2, 4, 8)) == 4
    assert batch_bucket(8, (1, 2, 4, 8)) == 8
    assert batch_bucket(9, (1, 2, 4, 8)) == 9  # beyond the last bucket: as is
    assert batch_bucket(5, None) == 5


def test_staging_rotates_two_slots_per_shape_on_the_host():
    staging = Staging(torch, torch.device("cpu"), cuda=False)
    a = np.full((1, 3, 4, 4), 1.0, np.float32)
    b = np.full((1, 3, 4, 4), 2.0, np.float32)
    xa, xb = staging.to_device(a), staging.to_device(b)
    # Two slots: the second call did not overwrite the first one's data.
    assert float(xa.mean()) == 1.0 and float(xb.mean()) == 2.0
    assert staging.describe() == {"pinned": False, "slots": 2, "buffers": 2}
    staging.to_device(np.zeros((2, 3, 4, 4), np.float32))
    assert staging.describe()["buffers"] == 4
    out = staging.to_host([torch.ones(1, 1, 2, 2, dtype=torch.bfloat16)])
    assert out[0].dtype == np.float32 and out[0].sum() == 4


def test_mode_spellings():
    assert resolve_mode({}) == "eager"
    assert resolve_mode({"compile": True}) == "compile"
    assert resolve_mode({"cuda_graph": True}) == "cudagraphs"
    assert resolve_mode({"mode": "compile"}) == "compile"
    with pytest.raises(ValueError, match="torch mode"):
        resolve_mode({"mode": "jit"})


def test_cudagraphs_needs_cuda():
    from segdeploy.backends import RuntimeUnavailable

    with pytest.raises(RuntimeUnavailable, match="cudagraphs needs"):
        open_runtime("unetpp_dsb2018", "torch", weights="random", mode="cudagraphs")


def test_output_selection_returns_only_the_asked_outputs():
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    rt = open_runtime("u2netp", "torch", weights="random")
    every = rt.run(x)
    only = rt.run(x, outputs=(0,))
    assert len(every) == 7 and len(only) == 1 and np.array_equal(only[0], every[0])
    two = rt.run(x, outputs=(6, 2))
    assert np.array_equal(two[0], every[6]) and np.array_equal(two[1], every[2])
    with pytest.raises(ValueError, match="out of range"):
        rt.run(x, outputs=(7,))


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_onnx_backends_select_outputs_too(backend):
    from segdeploy.backends import available_backends
    from segdeploy.convert.export_cache import cached_export

    if available_backends()[backend]:
        pytest.skip(available_backends()[backend])
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64), dtype=np.float32)
    rt = open_runtime("u2netp", backend, onnx_path=cached_export("u2netp", "random", input_size=(64, 64)))
    every = rt.run(x)
    only = rt.run(x, outputs=(3,))
    assert len(only) == 1 and np.array_equal(only[0], every[3])


def test_compile_failure_falls_back_to_eager_and_says_so(monkeypatch):
    x = np.random.default_rng(2).standard_normal((3, 3, 32, 32), dtype=np.float32)
    ref = open_runtime("unetpp_dsb2018", "torch", weights="random").run(x)[0]

    def broken_compile(module, **kwargs):
        assert kwargs["dynamic"] is False  # one static graph per shape

        def fail(*args, **kw):
            raise RuntimeError("inductor unavailable")
        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    rt = open_runtime("unetpp_dsb2018", "torch", weights="random", mode="compile")
    out = rt.run(x)[0]
    info = rt.describe()
    assert info["mode"] == "compile" and "inductor unavailable" in info["compile_fallback"]
    assert np.allclose(out, ref, atol=1e-6) and out.shape[0] == 3  # bucket padding dropped


def test_compile_pads_to_buckets_and_records_compiled_shapes(monkeypatch):
    seen = []

    def recording_compile(module, **kwargs):
        def call(x):
            seen.append(tuple(x.shape))
            return module(x)
        return call

    monkeypatch.setattr(torch, "compile", recording_compile)
    rt = open_runtime("unetpp_dsb2018", "torch", weights="random", mode="compile")
    x = np.random.default_rng(3).standard_normal((3, 3, 32, 32), dtype=np.float32)
    out = rt.run(x)[0]
    assert out.shape[0] == 3 and seen == [(4, 3, 32, 32)]
    info = rt.describe()
    assert list(info["compiled_shapes"]) == ["4x3x32x32"] and info["compile_fallback"] is None
    assert info["batch_buckets"][:4] == [1, 2, 4, 8]


CUDA = torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_staging_pinned_and_split_from_real_copies():
    rt = open_runtime("u2netp", "torch", device="cuda", precision="fp16", weights="random")
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64), dtype=np.float32)
    ref = open_runtime("u2netp", "torch", weights="random").run(x, outputs=(0,))[0]
    rt.staging.time_copies(True)
    out = rt.run(x, outputs=(0,))[0]
    assert np.abs(out - ref).max() < 0.05
    assert rt.staging.describe()["pinned"] is True and len(rt.staging.splits) == 1
    h2d, compute, d2h = rt.staging.splits[0]
    assert h2d > 0 and compute > 0 and d2h > 0
    info = rt.describe()
    assert info["cudnn_benchmark"] is True and info["staging"]["pinned"] is True


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cudagraphs_cache_is_bounded():
    rt = open_runtime("unetpp_dsb2018", "torch", device="cuda", precision="fp16", weights="random",
                      mode="cudagraphs", max_graphs=2)
    for n in (1, 2, 3):
        rt.run(np.zeros((n, 3, 32, 32), np.float32))
    info = rt.describe()
    assert info["graphs_cached"] == 2 and info["graph_evictions"] == 1


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_native_size_models_do_not_turn_on_cudnn_benchmark_process_wide():
    before = torch.backends.cudnn.benchmark
    rt = open_runtime("unet_carvana", "torch", device="cuda", precision="fp16", weights="random")
    rt.run(np.zeros((1, 3, 64, 96), np.float32))
    assert rt.describe()["cudnn_benchmark"] is False and torch.backends.cudnn.benchmark == before
