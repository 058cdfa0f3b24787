"""segdeploy: image-segmentation models from PyTorch checkpoint to fast, verified deployment.

The public API is imported lazily so that ``import segdeploy`` (and ``segdeploy --help``) does not
pull in torch, onnxruntime or openvino.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    # registry and specs
    "list_models": "segdeploy.core.registry",
    "get_spec": "segdeploy.core.registry",
    "register_model": "segdeploy.core.registry",
    "ModelSpec": "segdeploy.core.specs",
    "Preprocess": "segdeploy.core.specs",
    "Decode": "segdeploy.core.specs",
    "WeightsVariant": "segdeploy.core.specs",
    "SegdeployError": "segdeploy.core.errors",
    # networks and weights
    "create_model": "segdeploy.zoo",
    "load_weights": "segdeploy.zoo.checkpoints",
    # engine and jobs
    "read_image": "segdeploy.engine.images",
    "preprocess": "segdeploy.engine.transforms",
    "decode": "segdeploy.engine.transforms",
    "predict": "segdeploy.jobs.predict",
    "Session": "segdeploy.jobs.session",
    "evaluate": "segdeploy.jobs.evaluate",
    "predict_files": "segdeploy.jobs.predict",
    "RuntimeRequest": "segdeploy.jobs.options",
    "PredictOptions": "segdeploy.jobs.options",
    "EvalOptions": "segdeploy.jobs.options",
    # backends, conversion, verification, benchmarks, recipes
    "open_runtime": "segdeploy.backends",
    "ArtifactOptions": "segdeploy.backends",
    "export_onnx": "segdeploy.convert.export",
    "ExportOptions": "segdeploy.convert.export",
    "compare": "segdeploy.verify.compare",
    "CompareOptions": "segdeploy.verify.compare_plan",
    "benchmark": "segdeploy.bench.harness",
    "BenchOptions": "segdeploy.bench.options",
    "run_recipe": "segdeploy.recipes.runner",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'segdeploy' has no attribute {name!r}")
