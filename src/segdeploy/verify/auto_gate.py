"""The gate ``--backend auto`` judges its candidates with: the same per-image measures, thresholds
and quantile + worst-image rule as ``segdeploy compare``.

The backends layer sits below verify and cannot import it; it offers a hook
(:func:`segdeploy.backends.auto.set_fidelity_gate`) that :func:`install` fills. The CLI and the
public API install it before any runtime is opened.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from segdeploy.engine.transforms import decode
from segdeploy.tasks import get_task
from segdeploy.verify.gate import default_gate, judge
from segdeploy.verify.measures import checked_outputs, image_measures


def auto_gate(spec, precision: str, reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]],
              sizes: list[tuple[int, int]], ids: list[str] | None = None) -> tuple[bool, dict[str, float], str]:
    """(passed, measures, reason): :func:`gate_failures` with its first three failures joined."""
    failures, flat = gate_failures(spec, precision, reference, candidate, sizes, ids)
    return not failures, flat, "; ".join(failures[:3])


def gate_failures(spec, precision: str, reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]],
                  sizes: list[tuple[int, int]], ids: list[str] | None = None) -> tuple[list[str], dict[str, float]]:
    """(failures, measures) of ``candidate`` against the fp32 ``reference`` outputs, per image
    lists of CxHxW arrays in ``spec.output_names`` order, images of ``sizes`` (H, W); ``ids`` name
    the images in the reason (default "probe image N")."""
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
        results.append(image_measures(spec, ids[index] if ids else f"probe image {index}", ref_named, out_named, ref_pred, out_pred,
                                      gate.tensor))
    failures, summary = judge(gate, results, get_task(spec).fidelity_measures, names)
    flat: dict[str, float] = {}
    for name, stats in summary.get("measures", {}).items():
        for key in ("quantile", "worst"):
            if isinstance(stats, dict) and isinstance(stats.get(key), (int, float)):
                flat[f"{name}_{key}"] = float(stats[key])
    return failures, flat


def install() -> None:
    """Make ``--backend auto`` use :func:`auto_gate` (idempotent)."""
    from segdeploy.backends.auto import set_fidelity_gate

    set_fidelity_gate(auto_gate)
