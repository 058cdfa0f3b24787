"""Judging a candidate's outputs against the reference's: per-image measures (tensor error of each
checked output, Polygraphy style, and the task's measures on the decoded output, :meth:`Task.fidelity`)
and :func:`fidelity_gate`, the verdict ``segdeploy compare``, ``--backend auto`` (CLI, API, serve,
Ray workers alike) and the recipes reach through the thresholds of :mod:`segdeploy.engine.gate`."""

from __future__ import annotations

from typing import Any

import numpy as np

from segdeploy.engine.gate import TensorLimit, default_gate, judge
from segdeploy.engine.transforms import decode
from segdeploy.tasks import get_task


def checked_outputs(spec) -> list[str]:
    """The outputs whose tensor error is gated: the one decoding reads, and every output when a
    test-time protocol reads the raw outputs (wseg's class scores drive its multi-scale class cut).
    U²-Net's side outputs d1..d6 only train the network: not checked."""
    names = list(spec.output_names)
    if spec.protocol is not None or len(names) == 1:
        return names
    return [names[spec.decode.output_index]]


def tensor_measures(ref: np.ndarray, out: np.ndarray, limit: TensorLimit) -> dict[str, Any]:
    """Error of one image's output ``out`` against ``ref`` (same shape, no batch axis).

    ``scale`` = max |ref|; ``bound`` = limit.atol * scale + limit.rtol * |ref| element-wise;
    ``ratio`` = |out - ref| / bound. Returns max / mean absolute error, ``abs_q`` (the
    ``limit.quantile`` quantile of |out - ref|), ``ratio_q`` (that quantile of ``ratio``: <= 1 passes),
    ``within`` (share of elements within the bound), NaN / Inf counts, ``constant`` (the output is
    flat where the reference varies by more than 1e-3 of its scale) and the cosine similarity.
    """
    if ref.shape != out.shape:
        raise ValueError(f"output shape {out.shape} differs from the reference's {ref.shape}")
    ref64 = np.asarray(ref, dtype=np.float64).ravel()
    out64 = np.asarray(out, dtype=np.float64).ravel()
    nan = int(np.count_nonzero(np.isnan(out64)))
    inf = int(np.count_nonzero(np.isinf(out64)))
    finite = np.isfinite(out64)
    diff = np.where(finite, np.abs(out64 - ref64), np.inf)
    scale = float(np.abs(ref64).max()) if ref64.size else 0.0
    bound = limit.atol * scale + limit.rtol * np.abs(ref64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / np.where(bound > 0, bound, np.finfo(np.float64).tiny))
    ref_range = float(np.ptp(ref64)) if ref64.size else 0.0
    clean = np.where(finite, out64, 0.0)
    constant = bool(ref_range > 1e-3 * scale and ref_range > 0 and np.ptp(clean) == 0)
    norm = float(np.linalg.norm(ref64) * np.linalg.norm(clean))
    cosine = float(ref64 @ clean / norm) if norm > 0 else (1.0 if not np.any(diff) else 0.0)
    finite_diff = diff[finite]
    return {
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "mean_abs": float(finite_diff.mean()) if finite_diff.size else 0.0,
        "scale": scale,
        "abs_q": float(np.quantile(diff, limit.quantile)) if diff.size else 0.0,
        "ratio_q": float(np.quantile(ratio, limit.quantile)) if ratio.size else 0.0,
        "within": float(np.count_nonzero(ratio <= 1.0)) / max(ratio.size, 1),
        "nan": nan, "inf": inf, "constant": constant, "cosine": cosine,
    }


def image_measures(spec, image_id: str, ref_outputs: dict[str, np.ndarray], out_outputs: dict[str, np.ndarray],
                   ref_pred, out_pred, limit: TensorLimit, gt: np.ndarray | None = None) -> dict[str, Any]:
    """Everything the gate reads about one image: task measures and tensor measures per checked output.

    ``out_pred`` may be None when the candidate's outputs could not be decoded (NaN everywhere):
    the task measures are then the worst possible values.
    """
    task = get_task(spec)
    if out_pred is None:
        measures = {m.name: (0.0 if m.higher_is_better else float("inf")) for m in task.fidelity_measures}
    else:
        measures = task.fidelity(ref_pred, out_pred)
    result: dict[str, Any] = {
        "id": image_id, "measures": measures,
        "tensors": {name: tensor_measures(ref_outputs[name], out_outputs[name], limit) for name in ref_outputs},
    }
    if gt is not None and task.ground_truth_measure is not None and out_pred is not None:
        result["ground_truth"] = {"reference": task.ground_truth_score(ref_pred, gt),
                                  "candidate": task.ground_truth_score(out_pred, gt)}
    return result


def fidelity_gate(spec, precision: str, reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]],
                  sizes: list[tuple[int, int]], ids: list[str] | None = None) -> tuple[bool, dict[str, float], str]:
    """(passed, measures, reason): :func:`gate_failures` with its first three failures joined."""
    failures, flat = gate_failures(spec, precision, reference, candidate, sizes, ids)
    return not failures, flat, "; ".join(failures[:3])


def gate_failures(spec, precision: str, reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]],
                  sizes: list[tuple[int, int]], ids: list[str] | None = None) -> tuple[list[str], dict[str, float]]:
    """(failures, measures) of ``candidate`` against the fp32 ``reference`` outputs (per image lists
    of CxHxW arrays in ``spec.output_names`` order, images of ``sizes`` (H, W)), judged by
    :func:`segdeploy.engine.gate.default_gate` of the model's task and ``precision``; ``ids`` name
    the images in the failures (default "probe image N")."""
    gate = default_gate(spec.task, precision)
    names = checked_outputs(spec)
    results: list[dict[str, Any]] = []
    for index, (ref, out, size) in enumerate(zip(reference, candidate, sizes)):
        ref_named = {name: np.asarray(ref[spec.output_names.index(name)]) for name in names}
        out_named = {name: np.asarray(out[spec.output_names.index(name)]) for name in names}
        ref_pred = decode(ref, spec, size)
        try:
            out_pred = decode(out, spec, size)
        except (ValueError, FloatingPointError):  # NaN / Inf everywhere: worst values below
            out_pred = None
        label = ids[index] if ids else f"probe image {index}"
        results.append(image_measures(spec, label, ref_named, out_named, ref_pred, out_pred, gate.tensor))
    failures, summary = judge(gate, results, get_task(spec).fidelity_measures, names)
    flat: dict[str, float] = {}
    for name, stats in summary.get("measures", {}).items():
        for key in ("quantile", "worst"):
            if isinstance(stats, dict) and isinstance(stats.get(key), (int, float)):
                flat[f"{name}_{key}"] = float(stats[key])
    return failures, flat
