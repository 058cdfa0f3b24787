"""The runtimes and compare steps: open every configuration, judge each against PyTorch fp32.

Compare runs every configuration still to do in one :func:`segdeploy.verify.compare.compare` call,
so the reference is computed once; a failed gate is a *failed* unit naming the image and the measure.
"""

from __future__ import annotations

from pathlib import Path

import time
from typing import Any

from segdeploy.recipes.options import SYNTHETIC_SEED
from segdeploy.recipes.unit_store import Config, StepSkipped, failure, plain, reference_config, utc_now


class CompareSteps:
    """``step_runtimes`` and ``step_compare``; mixed into the Runner (see :mod:`segdeploy.recipes.runner`)."""

    def _inputs_described(self) -> str:
        n = self.options.compare_images
        if self.options.dataset and self.options.data_root:
            return (f"first {n} images of {self.options.dataset} at {self.options.data_root} (topped up with "
                    f"synthetic images when it has fewer)")
        if dict(self.options.extra).get("images"):
            return f"first {n} photographs in {dict(self.options.extra)['images']}"
        return f"{n} synthetic photo-like images (segdeploy.recipes.demo, seed {SYNTHETIC_SEED})"

    # -- runtimes -------------------------------------------------------------------------------
    def step_runtimes(self) -> dict[str, Any]:
        units = []
        for config in self.configs():
            def compute(config=config) -> dict[str, Any]:
                runtime = self.runtime(config)
                runtime.warmup((1, 3, *self.spec.input_size))
                return {"describe": plain(runtime.describe())}

            unit = self._unit("runtimes", config.slug, {"step": "runtimes", **self._deps(config)}, compute)
            unit.update(label=config.label, backend=config.backend, precision=config.precision)
            if self.quantizer(config):
                unit["quantizer"] = self.quantizer(config)
            self.reporter.unit_finished("runtimes", unit)
            units.append(unit)
        return {"configs": units}

    def available(self) -> list[Config]:
        """Configurations the runtimes step opened (in matrix order)."""
        step = self.results["steps"].get("runtimes") or {}
        units = (step.get("result") or {}).get("configs", [])
        done = {(u["backend"], u["precision"]) for u in units if u.get("status") == "done"}
        return [c for c in self.configs() if (c.backend, c.precision) in done]

    # -- compare --------------------------------------------------------------------------------
    def step_compare(self) -> dict[str, Any]:
        configs = [c for c in self.available() if c != reference_config()]
        if not configs:
            raise StepSkipped("no configuration besides the torch fp32 reference opened (see runtimes)")
        n = self.options.compare_images
        source = self._inputs_described()
        keys = {c: self._fp({"step": "compare", **self._deps(c), "inputs": source,
                             "options": dict(self.options.dataset_options)}) for c in configs}
        units: dict[Config, dict[str, Any]] = {}
        for config in configs:
            stored = self._lookup("compare", config.slug, keys[config])
            if stored is not None:
                units[config] = stored
        todo = [c for c in configs if c not in units]
        if todo:
            # One call for every configuration still to do: the PyTorch reference (and its
            # float64 noise floor) is computed once and the inputs stream through all of them.
            started, began = time.perf_counter(), utc_now()
            try:
                rows = self._compare(todo)
            except Exception as exc:  # noqa: BLE001 - recorded on every configuration it concerned
                rows = {c: failure(exc) for c in todo}
            wall = round((time.perf_counter() - started) / len(todo), 3)
            for config in todo:
                unit = rows[config]
                unit.update(fingerprint=keys[config], started_utc=began, wall_s=wall, resumed=False)
                units[config] = self._store("compare", config.slug, unit)
        out = []
        for config in configs:
            unit = units[config]
            unit.update(label=config.label, backend=config.backend, precision=config.precision)
            unit.setdefault("passed", None)
            self.reporter.unit_finished("compare", unit)
            out.append(unit)
        counts = {(u.get("summary") or {}).get("images") for u in out} - {None}
        if counts:
            source = source.replace(f"first {n} ", f"first {max(counts)} ").replace(f"{n} synthetic",
                                                                                  f"{max(counts)} synthetic")
        return {"reference": f"{reference_config().label}, eager, on the CPU (segdeploy.verify.compare)",
                "inputs": source,
                "gate": "segdeploy.engine.gate: per-image task measures on the 5th percentile and the worst image, "
                        "tensor error atol x scale + rtol x |ref| per checked output, thresholds per task x "
                        "precision (docs/verification.md)",
                "configs": out}

    def _compare_inputs(self) -> dict[str, Any]:
        """compare() keyword for the inputs: dataset samples with ground truth, else synthetic images."""
        n = self.options.compare_images
        if self.options.dataset and self.options.data_root:
            from types import SimpleNamespace

            from segdeploy.data import get_layout

            layout = get_layout(self.options.dataset, self.options.data_root, limit=n,
                                **dict(self.options.dataset_options))
            samples = []
            for sample in list(layout)[:n]:
                image, mask = layout.load(sample)
                if mask is not None:
                    from segdeploy.tasks import get_task

                    mask = get_task(self.spec).target(layout, mask).astype("uint8")
                samples.append(SimpleNamespace(id=sample.id, image=image, mask=mask))
            if not samples:
                raise StepSkipped(f"no images in {self.options.data_root} to compare on")
            if len(samples) < n:
                # The gate judges n images: a small dataset is topped up with synthetic photo-like
                # images (indices below n; int8 calibration uses indices n and up).
                from segdeploy.recipes.demo import render_sample

                samples += [SimpleNamespace(id=f"synthetic{i}", image=render_sample(i, SYNTHETIC_SEED).image, mask=None)
                            for i in range(n - len(samples))]
            return {"samples": samples}
        photos = dict(self.options.extra).get("images")
        if photos:
            from segdeploy.engine.finder import find_images
            from segdeploy.engine.images import read_image

            # (name, pixels): the verdict names a failing photo by its file name
            return {"images": [(Path(path).stem, read_image(path)) for path, _ in find_images([photos])[:n]]}
        from segdeploy.recipes.demo import render_sample

        return {"images": [render_sample(i, SYNTHETIC_SEED).image for i in range(n)]}

    def _compare(self, configs: list[Config]) -> dict[Config, dict[str, Any]]:
        """One compare() over ``configs``. A failed gate is a *failed* unit (exit 3) whose reason names
        the image and the measure; a runtime error is a failed unit too (exit 4)."""
        from segdeploy.verify.compare import CompareOptions, compare

        inputs = self._compare_inputs()
        options = CompareOptions(combos=[(c.backend, c.precision) for c in configs], device=self.options.device,
                                 onnx_path=self._onnx,
                                 int8_onnx={b: path for b, (path, _) in self._int8.items()} or None,
                                 seed=self.options.seed, batch_size=max(1, min(4, max(self.options.batch_sizes))),
                                 allow_few_images=bool(dict(self.options.extra).get("allow_few_images")))
        report = compare(self.module(), options=options, progress=self.reporter.message, **inputs)
        data = report.to_dict()
        out = {}
        for config in configs:
            row = next(r for r in data["rows"] if (r["backend"], r["precision"]) == (config.backend, config.precision))
            if row["status"] == "unavailable":
                out[config] = {"status": "skipped", "reason": row["reason"]}
            elif row["status"] == "error":
                out[config] = {"status": "failed", "reason": f"runtime error: {row['reason']}", "error": "runtime",
                               "passed": None, "record": row}
            elif row["status"] == "fail":
                failures = row["failures"]
                reason = (f"fidelity gate failed against {reference_config().label}: {failures[0]}"
                          + (f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""))
                out[config] = {"status": "failed", "reason": reason, "error": "gate", "passed": False,
                               "summary": _compare_summary(row, data), "record": row}
            else:
                out[config] = {"status": "done", "reason": None, "passed": True,
                               "summary": _compare_summary(row, data), "record": row}
        return out


def _number(value: Any) -> float | None:
    try:
        return float(value)  # compare writes inf / nan as strings
    except (TypeError, ValueError):
        return None


def _compare_summary(row: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """The numbers the fidelity table shows, from one row of a segdeploy.verify.compare report.

    Task measures are given as the gated low quantile (5th percentile of agreement, 95th of error)
    with the worst image next to it; ``rel`` is the largest max|out - ref| / max|ref| of a checked
    output over the images."""
    summary = row.get("summary") or {}
    measures = summary.get("measures") or {}
    tensors = summary.get("tensors") or {}
    rel, rel_output = None, None
    for image in row.get("images") or []:
        for name, t in (image.get("tensors") or {}).items():
            scale, max_abs = _number(t.get("scale")), _number(t.get("max_abs"))
            if scale and max_abs is not None and (rel is None or max_abs / scale > rel):
                rel, rel_output = max_abs / scale, name
    gt = summary.get("ground_truth") or {}

    def value(name: str, key: str = "quantile") -> float | None:
        return _number((measures.get(name) or {}).get(key))

    return {
        "cosine": min((_number(t.get("cosine_min")) for t in tensors.values()
                       if _number(t.get("cosine_min")) is not None), default=None),
        "rel": rel, "rel_output": rel_output,
        "max_abs": max((_number(t.get("max_abs")) or 0.0 for t in tensors.values()), default=None),
        "mask_iou": value("mask_iou"), "mask_iou_worst": value("mask_iou", "worst"),
        "map_mae": value("map_mae"), "map_mae_worst": value("map_mae", "worst"),
        "pixel_agreement": value("pixel_agreement"), "pixel_agreement_worst": value("pixel_agreement", "worst"),
        "gt_metric": gt.get("measure"), "gt_reference": gt.get("reference"), "gt_candidate": gt.get("candidate"),
        "images": len(row.get("images") or []) or report.get("images"),
        "few_images": report.get("few_images"),
        "failures": list(row.get("failures") or []),
        "notes": list(row.get("notes") or []),
    }
