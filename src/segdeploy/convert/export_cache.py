"""The export cache: ONNX exports kept under :func:`cache_dir`, keyed by model, weights, options and
library versions, and reused only when their sidecar and sha256 say they are intact.

Deciding whether an export can be reused is a separate
job from making one; this module calls the exporter only on a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from segdeploy.convert.export import (DEFAULT_OPSET, ExportOptions, export_onnx, parse_input_size, resolve_module,
                                      sidecar_path)
from segdeploy.convert.fingerprints import artifact_intact, library_versions, state_dict_digest, weights_tag
from segdeploy.core.registry import get_spec
from segdeploy.core.specs import ModelSpec


def cache_dir() -> Path:
    """``$SEGDEPLOY_CACHE`` or ``~/.cache/segdeploy``."""
    root = os.environ.get("SEGDEPLOY_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "segdeploy"


def cached_export(model_or_name, weights=None, *, opset: int = DEFAULT_OPSET, input_size=None,
                  dynamic_batch: bool = True, dynamic_spatial: bool | None = None, exporter: str = "torchscript",
                  seed: int = 0, spec: ModelSpec | None = None) -> Path:
    """Path of an ONNX export of this model + weights, exporting into the cache only when needed.

    File: ``<cache>/onnx/<model>-<weights tag>-opset<N>-<config hash>.onnx``; the weights tag is the
    checkpoint's sha256 prefix, ``random<seed>``, or a hash of a module's state_dict. An existing
    file is reused when its sidecar says it was written by this segdeploy version with the same
    settings, its parity check passed and the file's sha256 is the one recorded when it was written.
    The key covers the options, the library versions (:func:`library_versions`) and, for a module,
    the sha256 of its state_dict (its weights record alone could be stale).
    """
    import torch

    from segdeploy import __version__

    module = None
    if isinstance(model_or_name, torch.nn.Module):
        module, spec, info = resolve_module(model_or_name, None, seed=seed, spec=spec)
    else:
        spec = get_spec(spec or model_or_name)
        info = _weights_info(spec, weights, seed)
    dynamic_spatial = spec.dynamic_spatial if dynamic_spatial is None else bool(dynamic_spatial)
    hw = parse_input_size(input_size, spec)
    config = {"opset": opset, "batch": dynamic_batch, "spatial": dynamic_spatial, "exporter": exporter,
              "version": __version__, "hw": list(hw) if not dynamic_spatial else None,
              "libraries": library_versions(),
              "state_dict": state_dict_digest(module) if module is not None else None}
    tag = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]
    path = cache_dir() / "onnx" / f"{spec.name}-{weights_tag(info, module)}-opset{opset}-{tag}.onnx"
    if _cache_valid(path, spec, info):
        return path
    if _tampered(path):
        import sys

        print(f"segdeploy: the cached export {path.name} is not the file that was written and checked (its sha256 "
              "differs from the one recorded beside it); exporting it again", file=sys.stderr, flush=True)
    options = ExportOptions(opset=opset, input_size=hw, dynamic_batch=dynamic_batch, dynamic_spatial=dynamic_spatial,
                            exporter=exporter)
    export_onnx(module if module is not None else spec, weights, path, options, seed=seed, spec=spec)
    return path


def _weights_info(spec: ModelSpec, weights, seed: int) -> dict[str, Any]:
    """The weights record create_model would make, without building the model."""
    from segdeploy.zoo.checkpoints import RANDOM, WeightsError, file_sha256, resolve_weights

    # None = the model's packaged default, a variant name = its packaged file; else the error that
    # says how to get the weights.
    weights = resolve_weights(spec, weights)
    if str(weights) == RANDOM:
        return {"kind": RANDOM, "path": None, "sha256": None, "seed": seed}
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    return {"kind": "file", "path": str(path.resolve()), "sha256": file_sha256(path), "seed": None}


def _tampered(path: Path) -> bool:
    """Whether a cached export exists, its sidecar records a complete write, and the file's bytes
    are no longer those it recorded (edited, truncated or replaced since)."""
    side = sidecar_path(path)
    if not (path.is_file() and side.is_file()):
        return False
    try:
        data = json.loads(side.read_text())
    except (OSError, ValueError):
        return False
    recorded = data.get("file_sha256") if isinstance(data, dict) else None
    return data.get("written") is True and bool(recorded) and not artifact_intact(path, recorded)


def _cache_valid(path: Path, spec: ModelSpec, info: dict[str, Any]) -> bool:
    from segdeploy import __version__

    side = sidecar_path(path)
    if not (path.is_file() and side.is_file()):
        return False
    try:
        data = json.loads(side.read_text())
        meta = data["metadata"]
        weights = json.loads(meta["segdeploy_weights"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    parity = data.get("parity") or {}
    return (data.get("written") is True and artifact_intact(path, data.get("file_sha256"))
            and meta.get("segdeploy_version") == __version__ and meta.get("segdeploy_model") == spec.name
            and weights.get("sha256") == info.get("sha256") and weights.get("kind") == info.get("kind")
            and parity.get("passed", True) is True)


__all__ = ["cache_dir", "cached_export"]
