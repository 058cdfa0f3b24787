"""Export parity: ONNX Runtime against PyTorch on a seeded batch, and the tensor error statistics
it is measured with (the verification package builds its gate on the same numbers).

Parity check: a seeded N(0, 1) batch of 2 at the export size runs through PyTorch (fp32, eval)
and through ONNX Runtime (CPU, all graph optimisations); per output max / mean absolute error,
relative error (max abs error / max |reference|) and cosine similarity. It fails when an output's
relative error exceeds ``parity_rtol`` (default 1e-3) and its absolute error exceeds
``PARITY_ATOL`` (1e-6). 1e-3 because the fp32 rounding error of the deep random-weight networks
reaches 1e-4 (wseg masks: 7e-5 between PyTorch fp32 and float64; ONNX Runtime 1.2e-4), while a
wrong conversion such as nearest instead of bilinear resizing gives 1e-2 and more. The finer,
noise-aware gate is ``segdeploy compare``. The numbers go into
:class:`~segdeploy.convert.export_result.ExportResult` and into ``<out>.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segdeploy.convert.export_result import ExportError, OutputParity, Parity
from segdeploy.core.specs import ModelSpec

PARITY_BATCH = 2
DEFAULT_PARITY_RTOL = 1e-3
#: an output whose max absolute error is at most this passes whatever its relative error (ONNX
#: Runtime's sigmoid approximation is off by ~1e-7; on a side output whose values stay below 1e-4
#: that reads as a large relative error)
PARITY_ATOL = 1e-6


def tensor_errors(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """max / mean absolute error, max |ref|, relative error and cosine similarity of two arrays.

    ``rel`` = max |out - ref| / max |ref| (0 when both are 0); ``cosine`` over the flattened arrays
    in float64 (1.0 when both are all-zero).
    """
    ref = np.asarray(ref, dtype=np.float64).ravel()
    out = np.asarray(out, dtype=np.float64).ravel()
    if ref.shape != out.shape:
        raise ValueError(f"shapes differ: reference {ref.size} values, output {out.size}")
    diff = np.abs(out - ref)
    max_abs = float(diff.max()) if diff.size else 0.0
    max_ref = float(np.abs(ref).max()) if ref.size else 0.0
    norm = float(np.linalg.norm(ref) * np.linalg.norm(out))
    cosine = float(ref @ out / norm) if norm > 0 else (1.0 if max_abs == 0 else 0.0)
    return {"max_abs": max_abs, "mean_abs": float(diff.mean()) if diff.size else 0.0, "max_ref": max_ref,
            "rel": max_abs / max_ref if max_ref > 0 else (0.0 if max_abs == 0 else float("inf")),
            "cosine": cosine}


def parity_input(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """The seeded, non-zero N(0, 1) float32 batch used for parity checks."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def output_list(out) -> list:
    """A forward pass's result as a list of outputs (a module may return one tensor or a tuple)."""
    return list(out) if isinstance(out, (tuple, list)) else [out]


def check_onnx_parity(session_path: Path, module, spec: ModelSpec, shape: tuple[int, ...], seed: int,
                      rtol: float, *, input_name: str) -> Parity:
    """Run the parity batch (``shape``, seeded by ``seed``) through ``module`` and through the ONNX
    file at ``session_path`` (fed as ``input_name``); the verdict rule is in the module doc."""
    import onnxruntime as ort
    import torch

    x = parity_input(shape, seed)
    with torch.no_grad():
        reference = [t.detach().float().numpy() for t in output_list(module(torch.from_numpy(x)))]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(session_path), options, providers=["CPUExecutionProvider"])
    got = session.run(list(spec.output_names), {input_name: x})
    outputs = []
    for name, ref, out in zip(spec.output_names, reference, got):
        if ref.shape != out.shape:
            raise ExportError(f"{spec.name}: output {name!r} has shape {out.shape} in ONNX Runtime, "
                              f"{ref.shape} in PyTorch")
        err = tensor_errors(ref, out)
        outputs.append(OutputParity(name=name, shape=tuple(ref.shape), max_abs=err["max_abs"],
                                    mean_abs=err["mean_abs"], max_ref=err["max_ref"], rel=err["rel"],
                                    cosine=err["cosine"]))
    passed = all(np.isfinite(o.max_abs) and (o.rel <= rtol or o.max_abs <= PARITY_ATOL) for o in outputs)
    return Parity(input_shape=tuple(shape), seed=seed, rtol=rtol, passed=passed, outputs=tuple(outputs),
                  runtime=f"onnxruntime {ort.__version__} CPUExecutionProvider")
