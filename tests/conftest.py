"""Test-wide settings: exported ONNX files go to a per-session cache, not the user's ~/.cache."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_segdeploy_cache(tmp_path_factory):
    previous = os.environ.get("SEGDEPLOY_CACHE")
    os.environ["SEGDEPLOY_CACHE"] = str(tmp_path_factory.mktemp("segdeploy-cache"))
    yield
    if previous is None:
        os.environ.pop("SEGDEPLOY_CACHE", None)
    else:
        os.environ["SEGDEPLOY_CACHE"] = previous
