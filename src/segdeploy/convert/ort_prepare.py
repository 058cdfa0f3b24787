"""Preparing an fp32 ONNX graph for ONNX Runtime's static quantizer (``quant_pre_process``), without
its console advice and without the scratch files it leaves in the working directory."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path


@contextlib.contextmanager
def quiet_logging():
    """ONNX Runtime's quantization tools log advice on the root logger; keep the console clean."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


#: What ONNX Runtime's symbolic shape inference leaves in the working directory when it cannot infer
#: every shape (with its weights beside it, in a file named by a uuid), before it raises.
_SYMBOLIC_SCRATCH = "sym_shape_infer_temp.onnx"


@contextlib.contextmanager
def _symbolic_scratch_removed():
    """Remove the scratch model ONNX Runtime writes into the user's working directory when symbolic
    shape inference fails (e.g. on UNet++, whose H and W are dynamic), and its external weights (36 MB
    there): a quantization must not leave files wherever it was started."""
    import onnx

    scratch = Path.cwd() / _SYMBOLIC_SCRATCH
    before = scratch.stat().st_mtime_ns if scratch.exists() else None
    try:
        yield
    finally:
        if scratch.exists() and scratch.stat().st_mtime_ns != before:
            try:
                graph = onnx.load(str(scratch), load_external_data=False).graph
                locations = {entry.value for tensor in graph.initializer for entry in tensor.external_data
                             if entry.key == "location"}
            except Exception:  # noqa: BLE001 - an unreadable scratch file is still removed
                locations = set()
            for name in locations:
                if Path(name).name == name:  # a bare file name beside the scratch model, nothing else
                    (scratch.parent / name).unlink(missing_ok=True)
            scratch.unlink(missing_ok=True)


def pre_process(onnx_path: Path, prepared: Path) -> Path:
    """``quant_pre_process`` (BatchNorm folding, shape inference) with symbolic shape inference, or
    without it when that fails (the data-dependent Pad of milesial's UNet defeats it); the original
    graph when both fail."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    for skip_symbolic in (False, True):
        try:
            with quiet_logging(), _symbolic_scratch_removed():
                quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=skip_symbolic)
            return prepared
        except Exception:  # noqa: BLE001 - try the next, more lenient preparation
            continue
    return onnx_path
