"""Bring your own ONNX: run a given ONNX file with a registry model's pre- and post-processing.

A user may only have an exported file — e.g. the ``u2netp.onnx`` rembg keeps in ``~/.u2net/``
(BatchNorm folded, static batch 1, outputs named "1959"…, no segdeploy metadata). Before it runs,
:func:`check_onnx_file` compares the file's input and outputs with the spec and names any
mismatch; :class:`FixedBatch` feeds a file with a static batch size in chunks of that size, so the
engine can still batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segdeploy.core.errors import UsageError
from segdeploy.core.specs import ModelSpec


@dataclass(frozen=True)
class OnnxFileInfo:
    """What an ONNX file takes and gives. Dimensions are ints when fixed, strings when symbolic."""

    path: str
    input_name: str
    input_shape: tuple[Any, ...]
    output_names: tuple[str, ...]
    output_shapes: tuple[tuple[Any, ...], ...]
    metadata: dict[str, str]

    @property
    def static_batch(self) -> int | None:
        dim = self.input_shape[0] if self.input_shape else None
        return dim if isinstance(dim, int) and dim > 0 else None

    @property
    def static_hw(self) -> tuple[int, int] | None:
        h, w = self.input_shape[2:4] if len(self.input_shape) == 4 else (None, None)
        return (h, w) if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 else None


def _dims(value_info) -> tuple[Any, ...]:
    dims = []
    for dim in value_info.type.tensor_type.shape.dim:
        dims.append(dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or "?"))
    return tuple(dims)


def inspect_onnx(path: str | os.PathLike) -> OnnxFileInfo:
    """Read an ONNX file's graph inputs/outputs (weights are not loaded)."""
    import onnx

    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path}: is a folder; --onnx takes an .onnx file")
    if not path.is_file():
        from segdeploy.engine.finder import InputNotFound

        raise InputNotFound(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise UsageError(f"{path}: not a readable ONNX file ({type(exc).__name__}: {exc})") from None
    initializers = {init.name for init in proto.graph.initializer}
    inputs = [vi for vi in proto.graph.input if vi.name not in initializers]
    if len(inputs) != 1:
        raise UsageError(f"{path}: has {len(inputs)} inputs ({', '.join(vi.name for vi in inputs)}); "
                         "segdeploy runs single-image-input models")
    return OnnxFileInfo(
        path=str(path), input_name=inputs[0].name, input_shape=_dims(inputs[0]),
        output_names=tuple(o.name for o in proto.graph.output),
        output_shapes=tuple(_dims(o) for o in proto.graph.output),
        metadata={p.key: p.value for p in proto.metadata_props},
    )


def check_onnx_file(info: OnnxFileInfo, spec: ModelSpec) -> None:
    """Raise UsageError naming what in the file does not fit ``spec``'s pre/post-processing."""
    where = f"{info.path} (run with model {spec.name!r})"
    model_in_file = info.metadata.get("segdeploy_model")
    if model_in_file and model_in_file != spec.name:
        raise UsageError(f"{where}: the file was exported from model {model_in_file!r}; "
                         f"run it as `segdeploy ... {model_in_file} --onnx {info.path}`")
    shape = info.input_shape
    if len(shape) != 4:
        raise UsageError(f"{where}: input {info.input_name!r} has shape {list(shape)}; expected N x 3 x H x W")
    if isinstance(shape[1], int) and shape[1] != 3:
        raise UsageError(f"{where}: input {info.input_name!r} has {shape[1]} channels; {spec.name} feeds 3 (RGB)")
    if info.static_hw is not None:
        pre = spec.preprocess
        if pre.size is None:
            raise UsageError(f"{where}: the file's input is fixed at {info.static_hw[0]}x{info.static_hw[1]} but "
                             f"{spec.name} runs at each image's own size; export it with dynamic height/width")
        if tuple(pre.size) != info.static_hw:
            raise UsageError(f"{where}: the file's input is {info.static_hw[0]}x{info.static_hw[1]}; {spec.name} "
                             f"preprocesses to {pre.size[0]}x{pre.size[1]}")
    needed = spec.decode.output_index + 1 if len(spec.output_names) > 1 else 1
    if len(info.output_names) < needed:
        raise UsageError(f"{where}: the file has {len(info.output_names)} output(s); {spec.name} decodes output "
                         f"#{spec.decode.output_index} of {list(spec.output_names)}")
    if len(info.output_names) != len(spec.output_names) and not set(spec.output_names) <= set(info.output_names):
        raise UsageError(f"{where}: outputs {list(info.output_names)} do not match {spec.name}'s "
                         f"{list(spec.output_names)} (count or names)")
    for name, out_shape in zip(info.output_names, info.output_shapes):
        if out_shape and len(out_shape) != 4 and name == info.output_names[min(needed - 1, len(info.output_names) - 1)]:
            raise UsageError(f"{where}: output {name!r} has shape {list(out_shape)}; expected N x C x H x W")


class FixedBatch:
    """Runs a runtime whose file has a static batch size ``size`` on batches of any size: splits
    them into chunks of ``size`` (the last chunk padded with copies of its last item, whose outputs
    are dropped). Every other attribute is the wrapped runtime's."""

    def __init__(self, runtime, size: int):
        self._runtime = runtime
        self._size = size

    def run(self, batch: np.ndarray, *args, **kwargs) -> list[np.ndarray]:
        if len(batch) == self._size:
            return self._runtime.run(batch, *args, **kwargs)
        parts: list[list[np.ndarray]] = []
        for start in range(0, len(batch), self._size):
            chunk = batch[start:start + self._size]
            real = len(chunk)
            if real < self._size:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self._size - real, axis=0)])
            parts.append([out[:real] for out in self._runtime.run(chunk, *args, **kwargs)])
        return [np.concatenate([part[i] for part in parts]) for i in range(len(parts[0]))]

    def describe(self) -> dict[str, Any]:
        info = dict(self._runtime.describe())
        info["static_batch"] = self._size
        info["note_static_batch"] = f"the ONNX file has a static batch of {self._size}: batches run in chunks"
        return info

    def __getattr__(self, name: str):
        return getattr(self._runtime, name)

    def __setattr__(self, name: str, value) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._runtime, name, value)
