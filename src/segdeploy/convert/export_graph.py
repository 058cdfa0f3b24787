"""The torch -> ONNX steps of :func:`segdeploy.convert.export.export_onnx`: trace a seeded batch,
run the chosen exporter, and simplify the graph with onnxslim.

The exporter choice (TorchScript by default, dynamo on request) is explained in
:mod:`segdeploy.convert.export`; this module holds the graph-making steps only, so that the export
module keeps its options, writing and checks.
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from pathlib import Path
from typing import Any

from segdeploy.convert.export_result import ExportError
from segdeploy.convert.parity import PARITY_BATCH, output_list, parity_input
from segdeploy.core.specs import ModelSpec

INPUT_NAME = "input"


def _output_axes(name: str, shape: tuple[int, ...], hw: tuple[int, int], dynamic_batch: bool,
                 dynamic_spatial: bool) -> dict[int, str]:
    axes: dict[int, str] = {}
    if dynamic_batch:
        axes[0] = "batch"
    if dynamic_spatial and len(shape) >= 4:
        for axis, size, label in ((len(shape) - 2, hw[0], "height"), (len(shape) - 1, hw[1], "width")):
            axes[axis] = label if size == (hw[0] if label == "height" else hw[1]) else f"{name}_{label}"
    return axes


@contextlib.contextmanager
def _quiet_export():
    import logging

    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _torch_export(module, example, path: Path, *, exporter: str, opset: int, output_names: list[str],
                  dynamic_axes: dict[str, dict[int, str]], multiple_of: int, simplify: bool) -> int:
    """Run torch.onnx.export; returns the opset actually written."""
    import torch

    with _quiet_export(), torch.no_grad():
        if exporter == "torchscript":
            # TrainingMode.EVAL makes the exporter fold BatchNorm into the preceding Conv itself, a
            # pass that takes 10-15 s on wseg's 138 M parameters; when onnxslim runs afterwards it
            # folds them the same way (identical operator counts on every registry model) in less
            # time, so the module (already in eval mode) is exported with PRESERVE.
            mode = torch.onnx.TrainingMode.PRESERVE if simplify else torch.onnx.TrainingMode.EVAL
            torch.onnx.export(
                module, (example,), str(path), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                output_names=output_names, dynamic_axes=dynamic_axes or None, do_constant_folding=True,
                training=mode)
            return opset
        from torch.export import Dim

        opset = max(opset, 18)  # the dynamo exporter implements opset >= 18 only (see module doc)
        shapes: dict[int, Any] = {}
        for axis, label in dynamic_axes.get(INPUT_NAME, {}).items():
            low = 1 if axis == 0 else max(2, multiple_of)
            shapes[axis] = Dim(label, min=low, max=1 << 16)
        program = torch.onnx.export(
            module, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
            output_names=output_names, dynamic_shapes=(shapes,) if shapes else None, verbose=False)
        program.save(str(path))
        return opset


def traced_input(module, spec: ModelSpec, hw: tuple[int, int], seed: int, dynamic_batch: bool,
                  dynamic_spatial: bool):
    """(the seeded example batch traced, the dynamic axes of the input and of every output), after
    checking that the forward returns as many outputs as the spec names."""
    import torch

    output_names = list(spec.output_names)
    example = torch.from_numpy(parity_input((PARITY_BATCH, 3, *hw), seed))
    with torch.no_grad():
        probe = output_list(module(example))
    if len(probe) != len(output_names):
        raise ExportError(f"{spec.name}: forward returns {len(probe)} outputs but the spec names "
                          f"{len(output_names)} ({', '.join(output_names)})")
    dynamic_axes: dict[str, dict[int, str]] = {}
    in_axes = {0: "batch"} if dynamic_batch else {}
    if dynamic_spatial:
        in_axes.update({2: "height", 3: "width"})
    if in_axes:
        dynamic_axes[INPUT_NAME] = in_axes
    for name, tensor in zip(output_names, probe):
        axes = _output_axes(name, tuple(tensor.shape), hw, dynamic_batch, dynamic_spatial)
        if axes:
            dynamic_axes[name] = axes
    return example, dynamic_axes


def exported_graph(module, example, spec: ModelSpec, how: tuple[str, int], dynamic_axes, simplify: bool,
                    notes: list[str]):
    """(the ONNX ModelProto torch wrote, the opset it wrote) for ``how`` = (exporter, opset asked)."""
    import onnx

    exporter, requested_opset = how
    with tempfile.TemporaryDirectory(prefix="segdeploy-export-") as tmp:
        raw_path = Path(tmp) / "raw.onnx"
        try:
            opset = _torch_export(module, example, raw_path, exporter=exporter, opset=requested_opset,
                                  output_names=list(spec.output_names), dynamic_axes=dynamic_axes,
                                  multiple_of=spec.preprocess.multiple_of, simplify=simplify)
        except Exception as exc:
            raise ExportError(
                f"{spec.name}: torch.onnx.export ({exporter}) failed: {type(exc).__name__}: {exc}") from exc
        proto = onnx.load(str(raw_path))
    written_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    if written_opset != requested_opset:
        notes.append(f"asked for opset {requested_opset}, the {exporter} exporter wrote {written_opset}")
    return proto, written_opset


def slimmed(proto, notes: list[str]):
    """(the graph simplified by onnxslim, True), or (the graph as it was, False) when onnxslim fails."""
    import onnx
    import onnxslim

    try:
        with _quiet_export():
            # One onnx shape-inference pass, then onnxslim without its own: onnxslim's symbolic
            # inference re-serialises the whole model once per node (wseg: 27 s instead of 5 s)
            # and gives the same graph here.
            return onnxslim.slim(onnx.shape_inference.infer_shapes(proto, data_prop=True), no_shape_infer=True), True
    except Exception as exc:  # noqa: BLE001 - an unsimplified graph is still a valid export
        notes.append(f"onnxslim failed, graph left unsimplified: {type(exc).__name__}: {exc}")
        return proto, False


__all__ = ["INPUT_NAME", "traced_input", "exported_graph", "slimmed"]
