"""What an export produces and how it fails: :class:`ExportResult` (also the ``<out>.json`` sidecar),
the parity numbers it carries, and the export errors.

A module of its own so that the parity check
(:mod:`segdeploy.convert.parity`) and the exporter can both use these records without importing
each other.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any


class ExportError(RuntimeError):
    """Export failed; the message says at which step and why."""


class ExportParityError(ExportError):
    """The exported graph does not reproduce PyTorch within the tolerance (``result`` has the numbers)."""

    def __init__(self, message: str, result: "ExportResult"):
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class OutputParity:
    """Agreement of one output between ONNX Runtime and PyTorch on the parity batch."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    mean_abs: float
    max_ref: float
    rel: float
    cosine: float


@dataclass(frozen=True)
class Parity:
    input_shape: tuple[int, ...]
    seed: int
    rtol: float
    passed: bool
    outputs: tuple[OutputParity, ...]
    runtime: str

    @property
    def max_rel(self) -> float:
        return max((o.rel for o in self.outputs), default=0.0)

    @property
    def min_cosine(self) -> float:
        return min((o.cosine for o in self.outputs), default=1.0)


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote."""

    path: str
    model: str
    opset: int
    exporter: str
    input_name: str
    output_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    dynamic_axes: dict[str, dict[int, str]]
    simplified: bool
    nodes_before: int
    nodes_after: int
    metadata: dict[str, str]
    parity: Parity | None
    seconds: float
    file_bytes: int
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.parity is not None:
            data["parity"]["max_rel"] = self.parity.max_rel
            data["parity"]["min_cosine"] = self.parity.min_cosine
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

__all__ = ["ExportError", "ExportParityError", "OutputParity", "Parity", "ExportResult"]
