"""Tensor error statistics between a reference output and a converted one (export parity; the
verification package builds its gate on the same numbers)."""

from __future__ import annotations

import numpy as np


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
