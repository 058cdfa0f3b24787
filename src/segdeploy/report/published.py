"""Published numbers beside this run's: which rows can be compared, and why the others cannot.

A row is *comparable* only when this run measured the same thing on the same kind of machine:
the same model, an accuracy on the same dataset with trained weights, a throughput on the same
hardware class (a CPU run is not compared with an Ascend or MLU card, a CUDA run only with
NVIDIA GPU rows) at the same input size and batch size. Everything else is folded in the report
with the reason. ``ratio`` = measured / published for comparable rows.

Throughput is taken from configurations that pass the fidelity gate (a fast wrong answer is not
a speed to compare); accuracy from the evaluated configuration of the row's precision, else the
first evaluated; a ``cosine`` row from the lowest cosine similarity of the compare step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from segdeploy.report.results import Comparison, ConfigResult

#: words that mark a published row's hardware as an accelerator card (not a CPU)
_ACCELERATORS = ("ascend", "mlu", "nvidia", "tesla", " t4", "gpu", "tpu", "npu", "a100", "h100", "v100")


def hardware_class(hardware: str) -> str:
    """"cpu", "nvidia", "accelerator" or "unknown" for a published row's hardware string."""
    text = f" {hardware.lower()}"
    if "nvidia" in text or " t4" in text or "tesla" in text or "gpu" in text:
        return "nvidia"
    if any(word in text for word in _ACCELERATORS):
        return "accelerator"
    if "cpu" in text or "xeon" in text or "epyc" in text or "core i" in text:
        return "cpu"
    return "unknown"


def _throughput(row: Comparison, configs: Sequence[ConfigResult], device: str,
                measured_input, published_input) -> dict:
    cls = hardware_class(row.hardware)
    here = "nvidia" if device.startswith("cuda") else "cpu"
    notes = []
    comparable = True
    if cls != here:
        comparable = False
        kind = {"accelerator": "an accelerator card", "nvidia": "an NVIDIA GPU", "cpu": "a CPU",
                "unknown": "hardware not stated"}[cls]
        notes.append(f"measured on {row.hardware} ({kind}), this run on "
                     f"{'the CPU' if here == 'cpu' else 'an NVIDIA GPU'}")
    if measured_input and published_input and list(measured_input) != list(published_input):
        comparable = False
        notes.append(f"measured at {'x'.join(map(str, measured_input))}, published at "
                     f"{'x'.join(map(str, published_input))}")
    candidates = [(c, p) for c in configs if c.passes for p in c.bench if p.batch_size == row.batch_size
                  and (not row.precision or c.precision == row.precision)]
    if not candidates:
        notes.append(f"not measured: batch {row.batch_size}" + (f" {row.precision}" if row.precision else "")
                     + " was not benchmarked on a passing configuration")
        return {"comparable": False, "reason": "; ".join(notes)}
    config, point = max(candidates, key=lambda item: item[1].images_per_s)
    return {"measured": point.images_per_s, "measured_config": f"{config.label} (fastest passing of "
            f"{len(candidates)})", "comparable": comparable, "reason": "; ".join(notes)}


def _accuracy(row: Comparison, configs: Sequence[ConfigResult], dataset: str | None, random_weights: bool,
              evaluated: bool) -> dict:
    if row.metric == "cosine":
        values = [(c.label, c.fidelity.cosine) for c in configs if c.fidelity and c.fidelity.cosine is not None]
        if not values:
            return {"comparable": False, "reason": "not measured: the compare step has no result"}
        label, value = min(values, key=lambda item: item[1])
        return {"measured": value, "measured_config": f"{label} (lowest of {len(values)})", "comparable": True,
                "reason": ""}
    scored = [c for c in configs if c.evaluation is not None]
    if not evaluated or not scored:
        return {"comparable": False, "reason": "not measured: no evaluation in this run"}
    if row.dataset and row.dataset != dataset:
        return {"comparable": False, "reason": f"not measured: published on {row.dataset}, this run scored "
                                                f"{dataset or 'no dataset'}"}
    chosen = [c for c in scored if row.precision and c.precision == row.precision] or scored
    value = chosen[0].evaluation.metrics.get(row.metric)
    if value is None:
        return {"comparable": False, "reason": f"not measured: metric {row.metric} not in the evaluation"}
    out = {"measured": value, "measured_config": chosen[0].label, "comparable": True, "reason": ""}
    if random_weights:
        out.update(comparable=False, reason="random weights: the measured score says nothing about the model")
    return out


def pair_published(rows: Sequence[Comparison], configs: Sequence[ConfigResult], *, model: str,
                   dataset: str | None, random_weights: bool, device: str, measured_input=None,
                   published_input=None, measured_on: str = "", evaluated: bool = True) -> tuple[Comparison, ...]:
    """Fill each published row with this run's counterpart and decide whether it is comparable."""
    out = []
    for row in rows:
        reasons = [row.reason] if row.reason and not row.comparable else []
        base_ok = row.comparable
        if row.model and row.model != model:
            base_ok = False
            reasons.append(f"published for {row.model}; this run used {model}")
        if row.kind == "throughput":
            found = _throughput(row, configs, device, measured_input, published_input)
        else:
            found = _accuracy(row, configs, dataset, random_weights, evaluated)
        comparable = base_ok and found["comparable"] and found.get("measured") is not None
        if found["reason"]:
            reasons.append(found["reason"])
        if row.reason and row.comparable:
            reasons.append(row.reason)  # a plain note of the source
        measured = found.get("measured")
        ratio = measured / row.published if comparable and row.published else None
        out.append(dataclasses.replace(row, measured=measured, measured_config=found.get("measured_config"),
                                       comparable=comparable, reason="; ".join(dict.fromkeys(reasons)),
                                       ratio=ratio, measured_on=measured_on))
    return tuple(out)


def fold_reasons(rows: Sequence[Comparison]) -> list[tuple[str, list[Comparison]]]:
    """Not-comparable rows grouped by their first reason (the report folds each group)."""
    groups: dict[str, list[Comparison]] = {}
    for row in rows:
        if not row.comparable:
            groups.setdefault(row.reason.split("; ")[0] or "not comparable", []).append(row)
    return sorted(groups.items(), key=lambda item: -len(item[1]))
