"""Test-wide settings: exported ONNX files go to a per-session cache, not the user's ~/.cache."""

import os

import pytest

# `--backend auto` would run a timed probe (tens of seconds) the first time it meets a model; tests
# get the conservative static choice unless a test turns probing on itself.
os.environ.setdefault("SEGDEPLOY_AUTO_PROBE", "0")


@pytest.fixture(scope="session", autouse=True)
def _private_segdeploy_cache(tmp_path_factory):
    previous = os.environ.get("SEGDEPLOY_CACHE")
    os.environ["SEGDEPLOY_CACHE"] = str(tmp_path_factory.mktemp("segdeploy-cache"))
    yield
    if previous is None:
        os.environ.pop("SEGDEPLOY_CACHE", None)
    else:
        os.environ["SEGDEPLOY_CACHE"] = previous


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    """The serve tests' model plugin (``u2netp-test64``) written to a folder and registered here."""
    from tests.test_serve_support import register_in_process, write_plugin

    folder = write_plugin(tmp_path_factory.mktemp("plugin"))
    register_in_process(folder)
    return folder


@pytest.fixture(scope="module")
def controlled(plugin_dir):
    """The serve tests' torch runtime of ``u2netp-test64``, its passes counted and holdable."""
    from segdeploy.backends import open_runtime
    from tests.test_serve_support import MODEL, ControlledRuntime

    return ControlledRuntime(open_runtime(MODEL, backend="torch", weights="random", seed=0))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need a CUDA device: skipped, with the reason, where there is none."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_items and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA device (marker gpu)")
        for item in gpu_items:
            item.add_marker(skip)
