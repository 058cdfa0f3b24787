"""What an ONNX file says about itself: segdeploy's ``metadata_props`` (built, stamped into a
graph, read back) and whether the graph is int8-quantized.

The backends and the quantizer read files through
these helpers without needing the exporter. onnx is imported only when a file is read.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any

from segdeploy.core.specs import ModelSpec

_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
              "MatMulInteger", "DynamicQuantizeLinear"}


def build_metadata(spec: ModelSpec, weights_info: dict[str, Any], *, opset: int, exporter: str,
                   hw: tuple[int, int], extra: dict[str, Any] | None = None) -> dict[str, str]:
    """The ``metadata_props`` segdeploy writes into every ONNX file (string values, JSON where structured)."""
    from segdeploy import __version__

    meta = {
        "segdeploy_model": spec.name,
        "segdeploy_task": spec.task,
        "segdeploy_num_classes": str(spec.num_classes),
        "segdeploy_output_names": json.dumps(list(spec.output_names)),
        "segdeploy_preprocess": json.dumps(asdict(spec.preprocess)),
        "segdeploy_decode": json.dumps(asdict(spec.decode)),
        "segdeploy_weights": json.dumps({k: weights_info.get(k) for k in ("kind", "sha256", "seed", "path")}),
        "segdeploy_version": __version__,
        "segdeploy_opset": str(opset),
        "segdeploy_exporter": exporter,
        "segdeploy_input_size": json.dumps(list(hw)),
    }
    for key, value in (extra or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    return meta


def set_metadata(model_proto, metadata: dict[str, str]) -> None:
    existing = {p.key: p for p in model_proto.metadata_props}
    for key, value in metadata.items():
        if key in existing:
            existing[key].value = value
        else:
            model_proto.metadata_props.add(key=key, value=value)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (raw strings)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def is_quantized(model_or_path) -> bool:
    """True when the graph holds int8 quantization operators (QDQ or QOperator format)."""
    import onnx

    model = model_or_path if isinstance(model_or_path, onnx.ModelProto) else onnx.load(
        str(model_or_path), load_external_data=False)
    return any(node.op_type in _QUANT_OPS for node in model.graph.node)
