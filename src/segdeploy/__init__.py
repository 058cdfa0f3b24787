"""segdeploy: image-segmentation models from PyTorch checkpoint to fast, verified deployment.

The public API is imported lazily so that ``import segdeploy`` (and ``segdeploy --help``) does not
pull in torch, onnxruntime or openvino.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "list_models": "segdeploy.specs",
    "get_spec": "segdeploy.specs",
    "ModelSpec": "segdeploy.specs",
    "create_model": "segdeploy.models",
    "load_weights": "segdeploy.weights",
    "read_image": "segdeploy.io.images",
    "preprocess": "segdeploy.transforms",
    "decode": "segdeploy.transforms",
    "predict": "segdeploy.prediction",
    "evaluate": "segdeploy.evaluation",
    "open_runtime": "segdeploy.runtimes",
    "export_onnx": "segdeploy.export",
    "benchmark": "segdeploy.bench",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'segdeploy' has no attribute {name!r}")
