"""How auto opens PyTorch on CUDA (options, compile budget, timing batch) and predict's CUDA batch:
logic that needs no GPU; the GPU runs are in benchmarks/gpu_check.py and tests/test_gpu_paths.py."""

from __future__ import annotations

import argparse

import pytest

from segdeploy.backends.auto import auto_options
from segdeploy.backends.auto_cuda import CUDA_BATCH, compiles, cuda_options, timing_shape
from segdeploy.cli.common import default_batch_size
from segdeploy.core.registry import get_spec


def test_fixed_size_models_compile_fp16_half_channels_last(monkeypatch, tmp_path):
    monkeypatch.delenv("SEGDEPLOY_COMPILE", raising=False)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("SEGDEPLOY_CACHE", str(tmp_path))
    options = auto_options("torch", "cuda", spec=get_spec("u2netp"), precision="fp16")
    assert options == {"channels_last": True, "cast": "half", "mode": "compile", "compile_mode": "default",
                       "batch_buckets": (CUDA_BATCH,)}
    import os

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")  # compiled code cached on disk


def test_native_size_models_and_never_stay_eager(monkeypatch):
    monkeypatch.delenv("SEGDEPLOY_COMPILE", raising=False)
    assert not compiles(get_spec("unet_carvana"))
    assert cuda_options(get_spec("unet_carvana"), "fp32") == {"channels_last": True}
    monkeypatch.setenv("SEGDEPLOY_COMPILE", "never")
    assert "mode" not in cuda_options(get_spec("u2netp"), "fp16")
    monkeypatch.setenv("SEGDEPLOY_COMPILE", "always")
    assert compiles(get_spec("unet_carvana"))


def test_cpu_options_are_unchanged():
    assert auto_options("torch", "cpu", spec=get_spec("u2netp"), precision="fp32") == {}
    assert "streams" not in auto_options("openvino", "cuda")


def test_cuda_timing_batch_is_the_compiled_batch():
    assert timing_shape(get_spec("u2netp"), (1, 3, 320, 320)) == (CUDA_BATCH, 3, 320, 320)
    assert timing_shape(get_spec("unet_carvana"), (1, 3, 320, 480)) == (1, 3, 320, 480)


def test_predict_batch_default_follows_the_device():
    from segdeploy.cli.predict import register

    assert default_batch_size("cpu") == 1 and default_batch_size("cuda:0") == 64
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    register(sub)
    args = parser.parse_args(["predict", "u2netp", "x.jpg", "-o", "y.png", "--torch-mode", "compile",
                              "--channels-last"])
    assert args.batch_size is None and args.torch_mode == "compile" and args.channels_last


@pytest.mark.parametrize("command", ["eval", "serve"])
def test_eval_and_serve_take_torch_options(command):
    from importlib import import_module

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    import_module(f"segdeploy.cli.{command}").register(sub)
    argv = [command, "u2netp", "--torch-mode", "cudagraphs", "--channels-last"]
    if command == "eval":
        argv += ["--dataset", "ecssd", "--data-root", "x"]
    args = parser.parse_args(argv)
    assert args.torch_mode == "cudagraphs" and args.channels_last
