"""``segdeploy run``: one seed guide end to end — export → runtimes → compare → eval → bench → report.

A run is made of *units* stored with fingerprints (:mod:`segdeploy.recipes.unit_store`): running
again with the same settings loads finished units instead of recomputing them. The steps live in
their own modules (:mod:`~segdeploy.recipes.step_export`, :mod:`~segdeploy.recipes.step_compare`,
:mod:`~segdeploy.recipes.step_measure`), mixed into :class:`Runner`, which owns what they share
(the module, opened runtimes, the int8 artifacts) and the order, the record and the report.

A step (or unit) that lacks its input is *skipped* with the reason recorded — no dataset given,
backend not installed, precision not offered on this device — never failed. An unexpected error
fails only its unit; the other units and steps go on and the run's exit status says so.

``RUN_DIR/results.json`` is rewritten after every step, so an interrupted run leaves a readable
record; the report step renders it into ``report.md`` and ``report.html`` (:mod:`segdeploy.report.render`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segdeploy.backends import consumes
from segdeploy.recipes.catalog import Recipe, RunOptions, get_recipe
from segdeploy.recipes.options import SYNTHETIC_SEED, RunRequest, resolve_options
from segdeploy.recipes.step_compare import CompareSteps
from segdeploy.recipes.step_export import NNCF_QUANTIZER, QDQ_QUANTIZER, ExportStep
from segdeploy.recipes.step_measure import MeasureSteps
from segdeploy.recipes.unit_store import (Config, StepSkipped, UnitStore, finite, fingerprint, reference_config,
                                          json_default, pending_step, utc_now)
from segdeploy.report.document import summarise
from segdeploy.report.render import SCHEMA_ID, STEP_NAMES, check_results, write_reports

# Names callers import from here (segdeploy.cli.run / demo, tests): the runner is the entry point.
__all__ = ["Config", "NNCF_QUANTIZER", "QDQ_QUANTIZER", "Reporter", "Runner", "StepSkipped",
           "SYNTHETIC_SEED", "fingerprint", "resolve_options", "run_recipe"]


class Reporter:
    """What the runner tells the outside world. The base class says nothing (tests, the API)."""

    #: let long steps (evaluation) draw their own progress bars
    show_progress = False

    def step_started(self, index: int, total: int, name: str, what: str) -> None:
        pass

    def step_finished(self, index: int, total: int, name: str, record: dict[str, Any]) -> None:
        pass

    def unit_finished(self, step: str, unit: dict[str, Any]) -> None:
        pass

    def message(self, text: str) -> None:
        pass


class Runner(UnitStore, ExportStep, CompareSteps, MeasureSteps):
    """Runs one :class:`RunOptions` into ``run_dir``; :meth:`run` returns the results document."""

    def __init__(self, options: RunOptions, run_dir: str | os.PathLike, *, force: bool = False,
                 skip: tuple[str, ...] = (), reporter: Reporter | None = None, demo: dict[str, Any] | None = None,
                 skip_reasons: dict[str, str] | None = None):
        unknown = sorted(set(skip) - set(STEP_NAMES))
        if unknown:
            raise ValueError(f"unknown step(s) to skip: {', '.join(unknown)}; steps: {', '.join(STEP_NAMES)}")
        if "report" in skip:
            raise ValueError("the report step cannot be skipped (it writes results.json)")
        self.options = options
        self.recipe = get_recipe(options.recipe)
        self.run_dir = Path(run_dir)
        self.force = force
        self.skip = tuple(skip)
        self.skip_reasons = dict(skip_reasons or {})
        self.reporter = reporter or Reporter()
        self.demo = demo
        self.spec = self._spec()
        self.weights = self._weights_record()
        self._runtimes: dict[Config, Any] = {}
        self._module = None
        self._onnx: str | None = None
        self._export_fp: str | None = None
        # backend -> (int8 artifact, its unit's fingerprint): OpenVINO gets its own NNCF IR when
        # nncf is installed, every other ONNX backend the ONNX Runtime QDQ model.
        self._int8: dict[str, tuple[str, str]] = {}
        self._calib: list[Any] | None = None
        self.results: dict[str, Any] = {}

    # -- identity -------------------------------------------------------------------------------
    def _spec(self):
        from segdeploy.core.registry import get_spec

        spec = get_spec(self.options.model)
        size = dict(self.options.extra).get("model_input_size")
        if size is not None:
            hw = tuple(size)
            spec = dataclasses.replace(spec, preprocess=dataclasses.replace(spec.preprocess, size=hw, scale=None),
                                       input_size=hw)
        return spec

    def _weights_record(self) -> dict[str, Any]:
        how = self.spec.how_to_get
        if self.options.weights == "random":
            return {"kind": "random", "path": None, "sha256": None, "seed": self.options.seed, "how_to_get": how}
        from segdeploy.zoo.checkpoints import file_sha256

        path = Path(self.options.weights).resolve()
        return {"kind": "file", "path": str(path), "sha256": file_sha256(path), "seed": None, "how_to_get": how}

    # -- shared resources -----------------------------------------------------------------------
    def configs(self) -> list[Config]:
        return [Config(b, p) for b in self.options.backends for p in self.options.precisions]

    def module(self):
        """The PyTorch network with this run's weights (built once)."""
        if self._module is None:
            from segdeploy.zoo import create_model

            weights = "random" if self.weights["kind"] == "random" else self.weights["path"]
            self._module = create_model(self.spec, weights, seed=self.options.seed)
        return self._module

    def runtime(self, config: Config):
        """An opened runtime for ``config`` (opened once; RuntimeUnavailable → StepSkipped)."""
        if config in self._runtimes:
            cached = self._runtimes[config]
            if isinstance(cached, BaseException):
                raise cached
            return cached
        try:
            runtime = self._open(config)
        except StepSkipped as exc:
            self._runtimes[config] = exc
            raise
        self._runtimes[config] = runtime
        return runtime

    def _open(self, config: Config):
        from segdeploy.backends import RuntimeUnavailable, get_runtime_class, open_runtime

        try:
            # Cheap availability check first: nothing is built for a configuration that can't run.
            get_runtime_class(config.backend).check(self.options.device, config.precision, {})
        except RuntimeUnavailable as exc:
            raise StepSkipped(str(exc)) from exc
        excluded = {(b, p): why for b, p, why in dict(self.options.extra).get("exclude", ())}
        if (config.backend, config.precision) in excluded:
            raise StepSkipped(excluded[(config.backend, config.precision)])
        kwargs: dict[str, Any] = {"backend": config.backend, "device": self.options.device,
                                  "precision": config.precision}
        if consumes(config.backend) == "onnx":
            if self._onnx is None:
                raise StepSkipped("no ONNX export (the export step did not produce one)")
            kwargs["onnx_path"] = self._onnx
        if config.precision == "int8" and consumes(config.backend) == "onnx":
            if config.backend not in self._int8:
                raise StepSkipped("no int8 model (the export step's quantization did not produce one)")
            kwargs["onnx_path"] = self._int8[config.backend][0]
        try:
            return open_runtime(self.module(), **kwargs)
        except RuntimeUnavailable as exc:
            raise StepSkipped(str(exc)) from exc

    def _deps(self, config: Config) -> dict[str, Any]:
        """What a unit of ``config`` depends on besides its own settings: the ONNX it runs."""
        onnx = None
        if consumes(config.backend) == "onnx":
            onnx = self._int8.get(config.backend, (None, None))[1] if config.precision == "int8" else self._export_fp
        return {"config": [config.backend, config.precision], "onnx": onnx}

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run every step in order; returns (and writes) the results document."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        previous = self._previous_results()
        from segdeploy.core.environment import environment

        self.results = {
            "schema": SCHEMA_ID,
            "created_utc": previous.get("created_utc") or utc_now(),
            "updated_utc": utc_now(),
            "run_dir": str(self.run_dir.resolve()),
            "recipe": self.recipe.to_dict(),
            "options": self.options.to_dict(),
            "model": {"name": self.spec.name, "title": self.spec.title, "task": self.spec.task,
                      "num_classes": self.spec.num_classes, "source": self.spec.source, "license": self.spec.license,
                      "input_size": list(self.spec.input_size)},
            "weights": self.weights,
            "environment": environment(),
            "steps": {name: pending_step() for name in STEP_NAMES},
            "published_vs_measured": [],
            "warnings": [],
        }
        if self.demo:
            self.results["demo"] = self.demo
        steps = [("export", self.step_export, "ONNX export (and int8 quantization when asked)"),
                 ("runtimes", self.step_runtimes, "open every backend x precision"),
                 ("compare", self.step_compare, "fidelity against PyTorch fp32"),
                 ("eval", self.step_eval, "accuracy on the dataset"),
                 ("bench", self.step_bench, "throughput and latency per batch size")]
        total = len(STEP_NAMES)
        for index, (name, function, what) in enumerate(steps, start=1):
            self.reporter.step_started(index, total, name, what)
            record = self._run_step(name, function)
            self.results["steps"][name] = record
            self.reporter.step_finished(index, total, name, record)
            self._write_results()
        self.reporter.step_started(total, total, "report", "results.json, report.md, report.html")
        record = self._report_step()
        self.reporter.step_finished(total, total, "report", record)
        return self.results

    def _previous_results(self) -> dict[str, Any]:
        try:
            return json.loads((self.run_dir / "results.json").read_text())
        except (OSError, ValueError):
            return {}

    def _run_step(self, name: str, function: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        started = time.perf_counter()
        record = {"status": "done", "reason": None, "result": None, "wall_s": None, "resumed": False,
                  "started_utc": utc_now(), "fingerprint": None}
        if name in self.skip:
            record.update(status="skipped", reason=self.skip_reasons.get(name) or f"skipped on request (--skip {name})")
        else:
            try:
                result = function()
            except StepSkipped as exc:
                record.update(status="skipped", reason=str(exc))
            except Exception as exc:  # noqa: BLE001 - a failed step is recorded; later steps decide alone
                record.update(status="failed", reason=f"{type(exc).__name__}: {exc}",
                              result={"traceback": traceback.format_exc().strip().splitlines()[-8:]})
            else:
                record["result"] = result
                units = result.get("configs") if "configs" in result else [result] + [
                    result[k] for k in ("int8", "int8_nncf") if result.get(k)]
                # Resumed = nothing was computed: every unit came from storage or was a (cheap,
                # never stored) skip.
                record["resumed"] = any(u.get("resumed") for u in units) and all(
                    u.get("resumed") or u.get("status") == "skipped" for u in units)
                record["fingerprint"] = fingerprint([u.get("fingerprint") for u in units])
                done = [u for u in units if u.get("status") == "done"]
                if not done:
                    statuses = {u.get("status") for u in units}
                    reasons = "; ".join(f"{u.get('label', name)}: {u.get('reason')}" for u in units)
                    record.update(status="failed" if "failed" in statuses else "skipped",
                                  reason=reasons or "nothing to do")
        record["wall_s"] = round(time.perf_counter() - started, 3)
        return record
    # -- report ---------------------------------------------------------------------------------
    def _report_step(self) -> dict[str, Any]:
        started = time.perf_counter()
        self.results["warnings"] = self.warnings()
        verdict, published = summarise(self.results)
        # The verdict goes first in results.json, as in the reports.
        self.results = {"schema": self.results["schema"], "verdict": verdict,
                        **{k: v for k, v in self.results.items() if k not in ("schema", "verdict")},
                        "published_vs_measured": published}
        files = ["results.json", "report.md", "report.html"]
        record = {"status": "done", "reason": None, "result": {"files": files}, "wall_s": None, "resumed": False,
                  "started_utc": utc_now(), "fingerprint": None}
        self.results["steps"]["report"] = record
        self.results["updated_utc"] = utc_now()
        try:
            check_results(self.results)
            written = write_reports(self.run_dir, self.results)
            record["result"]["files"] = ["results.json", *written]
        except Exception as exc:  # noqa: BLE001 - results.json must still be written
            record.update(status="failed", reason=f"{type(exc).__name__}: {exc}", result=None)
        record["wall_s"] = round(time.perf_counter() - started, 3)
        self._write_results()
        return record

    def finish(self, demo: dict[str, Any] | None = None) -> dict[str, Any]:
        """Re-run the report step (after the caller added ``demo`` facts, e.g. the cut-outs written)."""
        if demo is not None:
            self.demo = demo
            self.results["demo"] = demo
        self.results["steps"]["report"] = self._report_step()
        return self.results

    def _write_results(self) -> None:
        from segdeploy.engine.writers import atomic_write_text

        self.results["updated_utc"] = utc_now()
        text = json.dumps(finite(self.results), indent=2, default=json_default, allow_nan=False)
        atomic_write_text(self.run_dir / "results.json", text)

    def warnings(self) -> list[str]:
        """What a reader must know before reading any number of this run."""
        out = []
        if self.weights["kind"] == "random" and self.recipe.dataset is None:
            out.append(f"Random weights (seed {self.weights['seed']}), as the guide itself uses: there is no "
                       "accuracy to measure; the cosine similarity against PyTorch and the speed are real.")
        elif self.weights["kind"] == "random":
            out.append(f"Random weights (seed {self.weights['seed']}): every accuracy figure in this report is "
                       f"meaningless; speed and fidelity are real. For real accuracy: {self.weights['how_to_get']}")
        size = dict(self.options.extra).get("model_input_size")
        if size:
            out.append(f"The model's input size was overridden to {size[0]}x{size[1]} (the guide uses "
                       f"{self.recipe.input_size[0]}x{self.recipe.input_size[1]}): accuracy is not the guide's.")
        if self.options.model != self.recipe.model:
            out.append(f"Model {self.options.model} instead of the recipe's {self.recipe.model}: rows published "
                       f"for {self.recipe.model} are not compared.")
        if self.options.limit:
            out.append(f"Accuracy is over the first {self.options.limit} samples only (--limit), not the whole split.")
        export = self.results["steps"]["export"].get("result") or {}
        int8 = [export[k] for k in ("int8", "int8_nncf") if export.get(k)]
        for unit in int8:
            if unit.get("status") != "done":
                out.append(f"{unit.get('label')} quantization {unit.get('status')}: {unit.get('reason')}")
        if any(u.get("status") == "done" for u in int8) and not dict(self.options.extra).get("calib"):
            out.append(f"int8 was calibrated on {self._calib_described()}, not on the images the compare step "
                       "judges. --calib DIR uses your own images.")
        for name in STEP_NAMES[:-1]:
            step = self.results["steps"][name]
            if step["status"] == "failed":
                out.append(f"Step {name} failed: {step['reason']}")
            for unit in (step.get("result") or {}).get("configs", []) or []:
                if unit.get("status") == "failed":
                    out.append(f"{name} {unit.get('label')} failed: {unit.get('reason')}")
                if name == "compare" and unit.get("passed") is False:
                    out.append(f"{unit.get('label')} does not pass the fidelity gate against "
                               f"{reference_config().label}: its masks differ beyond the tolerance (see Fidelity).")
        if not self.options.device.startswith("cuda"):
            out.append("Measured on a CPU: the guides' throughput rows come from accelerators (Ascend, MLU, T4) "
                       "and are context, not a target for this machine.")
        return out

    def exit_code(self) -> int:
        """0 when nothing failed (skips are fine); 3 when a fidelity gate failed and nothing else did;
        4 when a step or a configuration failed otherwise (a runtime error, a crash)."""
        from segdeploy.core.errors import EXIT_FIDELITY_FAILED, EXIT_OK, EXIT_RUNTIME

        gate = runtime = False
        for name in STEP_NAMES:
            step = self.results["steps"][name]
            units = (step.get("result") or {}).get("configs", []) or []
            failed = [u for u in units if u.get("status") == "failed"]
            gate = gate or any(u.get("error") == "gate" for u in failed)
            runtime = runtime or any(u.get("error") != "gate" for u in failed)
            if step["status"] == "failed" and not failed:
                runtime = True
        return EXIT_RUNTIME if runtime else EXIT_FIDELITY_FAILED if gate else EXIT_OK

def run_recipe(recipe: str | Recipe, run_dir: str | os.PathLike, *, force: bool = False, skip: tuple[str, ...] = (),
               reporter: Reporter | None = None, **options: Any) -> dict[str, Any]:
    """Python API of ``segdeploy run``: resolve options, run every step, return results.json's content."""
    runner = Runner(resolve_options(recipe, RunRequest(**options)), run_dir, force=force, skip=skip, reporter=reporter)
    return runner.run()
