"""``segdeploy run``: one seed guide end to end — export → runtimes → compare → eval → bench → report.

Every step is made of *units* (one per backend/precision configuration; export has one). A unit
that finishes is stored as ``RUN_DIR/steps/<step>/<unit>.json`` with a fingerprint of everything
that determines it (model, weights sha256 or seed, device, the unit's settings, the ONNX export it
used). Running again with the same settings loads finished units instead of recomputing them
(``resumed``); a changed setting recomputes only the units it touches; ``force`` recomputes all.
Skipped and failed units are never stored: they are tried again on the next run.

A step (or unit) that lacks its input is *skipped* with the reason recorded — no dataset given,
backend not installed, precision not offered on this device — never failed. An unexpected error
fails only its unit; the other units and steps go on and the run's exit status says so.

``RUN_DIR/results.json`` is rewritten after every step, so an interrupted run leaves a readable
record; the report step renders it into ``report.md`` and ``report.html`` (:mod:`segdeploy.report.render`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from segdeploy.recipes.catalog import Recipe, RunOptions, get_recipe
from segdeploy.report.document import summarise
from segdeploy.report.render import SCHEMA_ID, STEP_NAMES, check_results, write_reports

#: Seed of the synthetic images the compare step uses when the recipe has no dataset.
SYNTHETIC_SEED = 0

#: The quantizers whose int8 models the run uses, as results.json and the report name them.
QDQ_QUANTIZER = "ONNX Runtime QDQ (segdeploy.convert.quantize)"
NNCF_QUANTIZER = "NNCF OpenVINO IR (segdeploy.convert.nncf_quantize)"


def _has_nncf() -> bool:
    import importlib.util

    return importlib.util.find_spec("nncf") is not None


def _ir_intact(stored: dict[str, Any]) -> bool:
    """A stored NNCF unit is reusable only while both halves of its IR are the files written."""
    from segdeploy.convert.export import artifact_intact

    return (artifact_intact(stored.get("xml") or "", stored.get("xml_sha256"))
            and artifact_intact(stored.get("bin") or "", stored.get("bin_sha256")))


def _artifact_intact(stored: dict[str, Any]) -> bool:
    """A stored export unit is reusable only while its ONNX file is byte for byte the one written:
    its sha256 is checked (a file corrupted in place keeps its size), else it is exported again."""
    from segdeploy.convert.export import artifact_intact

    return artifact_intact(stored.get("onnx") or "", stored.get("onnx_sha256"))

class StepSkipped(Exception):
    """A step or unit cannot run for want of its input; the message is the recorded reason."""


@dataclass(frozen=True)
class Config:
    """One runtime configuration of the matrix."""

    backend: str
    precision: str

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"

    @property
    def slug(self) -> str:
        return f"{self.backend}-{self.precision}"


REFERENCE = Config("torch", "fp32")


def _utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def fingerprint(data: Any) -> str:
    """sha256 of the canonical JSON of ``data``: what a stored unit was computed from."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


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


# ------------------------------------------------------------------------------------------ options
def resolve_options(
    recipe: str | Recipe, *, weights: str | None = None, data_root: str | None = None, model: str | None = None,
    dataset: str | None = None, device: str = "auto", backends=None, precisions=None, batch_sizes=None,
    input_size=None, limit: int | None = None, dataset_options: dict[str, Any] | None = None,
    eval_on: str = "auto", compare_images: int | None = None, bench_warmup: int | None = None,
    bench_iters: int | None = None, seed: int = 0, wseg_protocol: str | None = None,
    model_input_size=None, calib: str | None = None, num_calib: int | None = None,
    allow_few_images: bool = False,
    images: str | None = None, exclude: tuple[tuple[str, str, str], ...] = (),
) -> RunOptions:
    """Fill in a recipe's defaults for this machine and check the overrides.

    On a CPU the matrix is the recipe's modest ``cpu_precisions`` x ``cpu_batch_sizes`` and the
    benchmark does 1 warm-up + 5 timed calls per batch size; on CUDA the guide's batch sizes and
    precisions with 10 + 50 calls. Every choice is recorded in results.json.

    Args:
        weights: checkpoint path, "random", or None (the recipe's default, else an error saying
            how to get the official file).
        model_input_size: (H, W) the model's preprocessing squashes images to, replacing the
            spec's (quick trials and tests only: accuracy is then not the guide's).
        calib: folder of int8 calibration images (default: the compare step's images).
        num_calib: calibration images used (default segdeploy.convert.quantize.DEFAULT_NUM_CALIB).
        allow_few_images: let the compare step judge fewer than 16 images (the report says so).
        images: folder of images (no ground truth) the compare step and int8 calibration use when
            there is no dataset, instead of synthetic ones (the demo's photographs).
        exclude: (backend, precision, reason) configurations not to run; recorded as skipped with
            the reason.
    """
    recipe = get_recipe(recipe)
    model = model or recipe.model
    if model not in recipe.allowed_models():
        raise ValueError(f"recipe {recipe.name} runs {', '.join(recipe.allowed_models())}; got --model {model}")
    if dataset is not None and recipe.dataset is None:
        raise ValueError(f"recipe {recipe.name} has no dataset step (the guide measures cosine similarity only)")
    dataset = dataset or recipe.dataset
    if dataset is not None and dataset not in recipe.allowed_datasets():
        raise ValueError(f"recipe {recipe.name} scores {', '.join(recipe.allowed_datasets())}; got --dataset "
                         f"{dataset}")
    if weights is None:
        weights = recipe.default_weights
    if weights is None:
        from segdeploy.core.registry import get_spec

        how = get_spec(model).how_to_get
        raise ValueError(f"recipe {recipe.name} needs the official weights of {model}: {how} "
                         "Or pass --weights random to try the whole pipeline with deterministic random weights "
                         "(accuracy then means nothing).")
    if str(weights) != "random" and not Path(weights).is_file():
        raise FileNotFoundError(f"{weights}: no such weights file")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    cpu = not str(device).startswith("cuda")
    backends = tuple(backends or recipe.backends)
    precisions = tuple(precisions or (recipe.cpu_precisions if cpu else recipe.precisions))
    batch_sizes = tuple(int(b) for b in (batch_sizes or (recipe.cpu_batch_sizes if cpu else recipe.batch_sizes)))
    from segdeploy.backends import PRECISIONS, backend_names

    unknown = [b for b in backends if b not in backend_names()]
    if unknown:
        raise ValueError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(backend_names())}")
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise ValueError(f"unknown precision(s) {', '.join(unknown)}; choose from {', '.join(PRECISIONS)}")
    if any(b < 1 for b in batch_sizes):
        raise ValueError(f"batch sizes must be positive, got {list(batch_sizes)}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    extra: dict[str, Any] = {}
    if model_input_size is not None:
        extra["model_input_size"] = list(_hw(model_input_size))
    if calib is not None:
        if not Path(calib).is_dir():
            raise FileNotFoundError(f"{calib}: --calib must be a folder of images")
        extra["calib"] = str(Path(calib).resolve())
    if num_calib is not None:
        if num_calib < 1:
            raise ValueError(f"--num-calib must be >= 1, got {num_calib}")
        extra["num_calib"] = int(num_calib)
    if allow_few_images:
        extra["allow_few_images"] = True
    from segdeploy.verify.gate import MIN_IMAGES

    judged = compare_images or recipe.compare_images
    if judged < 1:
        raise ValueError(f"--compare-images must be >= 1, got {judged}")
    if judged < MIN_IMAGES and not allow_few_images:
        from segdeploy.core.errors import UsageError

        raise UsageError(f"--compare-images {judged}: the fidelity gate judges at least {MIN_IMAGES} images; pass "
                         "--allow-few-images to judge fewer (the report says so)")
    if images is not None:
        if not Path(images).is_dir():
            raise FileNotFoundError(f"{images}: images must be a folder of images")
        extra["images"] = str(Path(images).resolve())
    if exclude:
        extra["exclude"] = tuple(tuple(item) for item in exclude)
    size = _hw(input_size) if input_size is not None else (
        _hw(model_input_size) if model_input_size is not None else recipe.input_size)
    if eval_on not in ("auto", "all", "first") and not all(":" in item for item in eval_on.split(",")):
        raise ValueError(f"--eval-on takes auto, all, first or backend:precision[,...]; got {eval_on!r}")
    return RunOptions(
        recipe=recipe.name, model=model, weights=str(weights), dataset=dataset,
        data_root=str(Path(data_root).resolve()) if data_root else None, device=str(device),
        backends=backends, precisions=precisions, batch_sizes=batch_sizes, input_size=size, limit=limit,
        dataset_options=tuple(sorted({**dict(recipe.dataset_options), **(dataset_options or {})}.items())),
        eval_on=eval_on, compare_images=compare_images or recipe.compare_images,
        bench_warmup=bench_warmup if bench_warmup is not None else (1 if cpu else 10),
        bench_iters=bench_iters if bench_iters is not None else (5 if cpu else 50),
        seed=seed, wseg_protocol=wseg_protocol, extra=tuple(sorted(extra.items())),
    )


def _hw(value) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, str):
        parts = [int(p) for p in value.lower().split("x")]
        return (parts[0], parts[-1])
    h, w = value
    return (int(h), int(w))


# ------------------------------------------------------------------------------------------- runner
class Runner:
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

    def _base(self) -> dict[str, Any]:
        from segdeploy.convert.export import library_versions

        # Library versions are part of every unit's identity: an upgraded exporter or runtime must
        # recompute, never resume results an older one produced.
        return {"model": self.spec.name, "preprocess": dataclasses.asdict(self.spec.preprocess),
                "weights": self.weights.get("sha256") or f"random:{self.weights.get('seed')}",
                "device": self.options.device, "libraries": library_versions()}

    # -- unit storage ---------------------------------------------------------------------------
    def _unit_path(self, step: str, slug: str) -> Path:
        return self.run_dir / "steps" / step / f"{slug}.json"

    def _lookup(self, step: str, slug: str, fp: str,
                valid: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any] | None:
        """The stored unit when it is done, its fingerprint is ``fp`` and ``valid`` accepts it."""
        path = self._unit_path(step, slug)
        if self.force or not path.is_file():
            return None
        try:
            stored = json.loads(path.read_text())
        except ValueError:
            return None
        if stored.get("fingerprint") != fp or stored.get("status") != "done" or (valid and not valid(stored)):
            return None
        stored["resumed"] = True
        return stored

    def _store(self, step: str, slug: str, unit: dict[str, Any]) -> dict[str, Any]:
        """Keep a done unit on disk; forget a stored one that did not succeed this time."""
        from segdeploy.engine.writers import atomic_write_text

        path = self._unit_path(step, slug)
        if unit["status"] == "done":
            atomic_write_text(path, json.dumps(unit, indent=2, default=_json_default))
        elif path.is_file():
            path.unlink()  # a stale success must not be picked up after this run failed it
        return unit

    def _fp(self, key: dict[str, Any]) -> str:
        return fingerprint({**self._base(), **key})

    def _unit(self, step: str, slug: str, key: dict[str, Any], compute: Callable[[], dict[str, Any]],
              valid: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        """A stored unit when its fingerprint matches (and ``valid``), else ``compute()`` (stored if done).

        ``compute`` returns the unit dict; it may raise StepSkipped (→ status skipped) or anything
        else (→ status failed, with the error and the tail of the traceback).
        """
        fp = self._fp(key)
        stored = self._lookup(step, slug, fp, valid)
        if stored is not None:
            return stored
        started = time.perf_counter()
        began = _utc()
        try:
            unit = {"status": "done", "reason": None, **compute()}
        except StepSkipped as exc:
            unit = {"status": "skipped", "reason": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one configuration's failure must not stop the run
            unit = _failure(exc)
        unit.update(fingerprint=fp, started_utc=began, wall_s=round(time.perf_counter() - started, 3), resumed=False)
        return self._store(step, slug, unit)

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
        if config.backend != "torch":
            if self._onnx is None:
                raise StepSkipped("no ONNX export (the export step did not produce one)")
            kwargs["onnx_path"] = self._onnx
        if config.precision == "int8" and config.backend != "torch":
            if config.backend not in self._int8:
                raise StepSkipped("no int8 model (the export step's quantization did not produce one)")
            kwargs["onnx_path"] = self._int8[config.backend][0]
        try:
            return open_runtime(self.module(), **kwargs)
        except RuntimeUnavailable as exc:
            raise StepSkipped(str(exc)) from exc

    def _calibration(self) -> list[Any] | None:
        """Calibration images for int8 when no --calib folder is given, disjoint from the images the
        compare step judges: the dataset's images after those, else synthetic images of other indices."""
        if self._calib is None:
            n, k = self.options.compare_images, self._num_calib()
            images: list[Any] = []
            if self.options.dataset and self.options.data_root:
                from segdeploy.data import get_layout

                layout = get_layout(self.options.dataset, self.options.data_root, limit=n + k,
                                    **dict(self.options.dataset_options))
                images = [layout.load(sample)[0] for sample in list(layout)[n:n + k]]
            if not images:
                from segdeploy.recipes.demo import render_sample

                images = [render_sample(i, SYNTHETIC_SEED).image for i in range(n, n + k)]
            self._calib = images
        return self._calib

    def _calib_described(self) -> str:
        n, k = self.options.compare_images, self._num_calib()
        if self.options.dataset and self.options.data_root:
            return (f"images {n + 1}-{n + k} of {self.options.dataset} at {self.options.data_root} (after the "
                    f"{n} compared), else synthetic images {n}-{n + k - 1}")
        return f"synthetic photo-like images {n}-{n + k - 1} (seed {SYNTHETIC_SEED}; the compare step judges 0-{n - 1})"

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run every step in order; returns (and writes) the results document."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        previous = self._previous_results()
        from segdeploy.core.environment import environment

        self.results = {
            "schema": SCHEMA_ID,
            "created_utc": previous.get("created_utc") or _utc(),
            "updated_utc": _utc(),
            "run_dir": str(self.run_dir.resolve()),
            "recipe": self.recipe.to_dict(),
            "options": self.options.to_dict(),
            "model": {"name": self.spec.name, "title": self.spec.title, "task": self.spec.task,
                      "num_classes": self.spec.num_classes, "source": self.spec.source, "license": self.spec.license,
                      "input_size": list(self.spec.input_size)},
            "weights": self.weights,
            "environment": environment(),
            "steps": {name: _pending() for name in STEP_NAMES},
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
                  "started_utc": _utc(), "fingerprint": None}
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

    # -- export ---------------------------------------------------------------------------------
    def step_export(self) -> dict[str, Any]:
        needs_onnx = [b for b in self.options.backends if b != "torch"]
        if not needs_onnx:
            raise StepSkipped("no ONNX backend in --backends (torch runs the network itself)")
        usable, reasons = self._onnx_users([p for p in self.options.precisions if p != "int8"])
        if not usable:
            raise StepSkipped("no ONNX backend can run here: " + "; ".join(reasons))
        try:
            import onnx  # noqa: F401
        except ImportError as exc:
            raise StepSkipped(f"onnx is not installed ({exc}); pip install onnx") from exc
        out = self.run_dir / "artifacts" / f"{self.spec.name}.onnx"
        key = {"step": "export", "input_size": list(self.spec.input_size), "out": str(out),
               "parity": "compare" in self.skip}

        def compute() -> dict[str, Any]:
            from segdeploy.convert.export import export_onnx

            # export_onnx's own parity check feeds N(0, 1) noise, on which random-weight networks
            # saturate some outputs (u2netp's d6 peaks near 1e-5) and fail a relative gate by
            # rounding alone. The compare step is the gate here: real images, every backend,
            # tolerances scaled by PyTorch's measured fp32 noise. Parity runs only without it.
            parity = "compare" in self.skip
            result = export_onnx(self.module(), out_path=out, input_size=self.spec.input_size,
                                 seed=self.options.seed, spec=self.spec, check_parity=parity)
            from segdeploy.zoo.checkpoints import file_sha256

            data = result.to_dict()
            return {"label": "onnx", "backend": "onnx", "precision": "fp32", "onnx": str(out),
                    "onnx_sha256": file_sha256(out), "onnx_bytes": out.stat().st_size, "export": data,
                    "parity": "export_onnx parity check" if parity else
                    "checked by the compare step (every backend vs PyTorch fp32 on real images)"}

        unit = self._unit("export", "onnx", key, compute, _artifact_intact)
        unit.setdefault("label", "onnx")
        self.reporter.unit_finished("export", unit)
        if unit["status"] == "done":
            self._onnx = unit["onnx"]
            self._export_fp = unit["fingerprint"]
        elif unit["status"] == "skipped":
            raise StepSkipped(unit["reason"])
        else:
            raise RuntimeError(unit["reason"])
        if "int8" in self.options.precisions:
            usable, reasons = self._onnx_users(["int8"])
            if not usable:
                unit["int8"] = {"label": "int8", "status": "skipped", "resumed": False,
                                "reason": "no ONNX backend runs int8 here: " + "; ".join(reasons)}
                return unit
            by_nncf = [c.backend for c in usable if c.backend == "openvino" and _has_nncf()]
            by_qdq = [c.backend for c in usable if c.backend not in by_nncf]
            if by_qdq:
                unit["int8"] = self._quantize(by_qdq)
            if by_nncf:
                unit["int8_nncf"] = self._quantize_nncf(by_nncf)
        return unit

    def _onnx_users(self, precisions: list[str]) -> tuple[list[Config], list[str]]:
        """ONNX-backend configurations among ``precisions`` that can run here, and why the others can't.

        Uses the backends' cheap availability checks (library importable, device, precision offered),
        so that nothing is exported or quantized for configurations that will be skipped anyway.
        """
        from segdeploy.backends import RuntimeUnavailable, get_runtime_class

        usable, reasons = [], []
        for backend in self.options.backends:
            if backend == "torch":
                continue
            for precision in precisions:
                try:
                    get_runtime_class(backend).check(self.options.device, precision, {})
                except (RuntimeUnavailable, ValueError) as exc:
                    reasons.append(f"{backend} {precision}: {exc}")
                else:
                    usable.append(Config(backend, precision))
        return usable, list(dict.fromkeys(reasons))

    def _quantize(self, backends: list[str]) -> dict[str, Any]:
        """int8 QDQ model of the export for ``backends``, calibrated on --calib images or the compare inputs."""
        out = self.run_dir / "artifacts" / f"{self.spec.name}-int8.onnx"
        calib_dir = dict(self.options.extra).get("calib")
        key = {"step": "quantize", "onnx": self._export_fp, "calib": calib_dir or self._calib_described(),
               "num_calib": self._num_calib(), "out": str(out)}

        def compute() -> dict[str, Any]:
            from segdeploy.convert.quantize import quantize_onnx
            from segdeploy.zoo.checkpoints import file_sha256

            calib = calib_dir or self._calibration()
            result = quantize_onnx(self.module(), calib=calib, out_path=out, onnx_path=self._onnx, spec=self.spec,
                                   num_calib=self._num_calib(), seed=self.options.seed)
            data = result.to_dict()
            data.pop("metadata", None)
            return {"label": "int8", "onnx": str(out), "onnx_sha256": file_sha256(out),
                    "onnx_bytes": out.stat().st_size, "quantize": data}

        unit = self._unit("export", "int8", key, compute, _artifact_intact)
        unit.update(label="int8", quantizer=QDQ_QUANTIZER, backends=backends)
        self.reporter.unit_finished("export", unit)
        if unit["status"] == "done":
            self._int8.update({b: (unit["onnx"], unit["fingerprint"]) for b in backends})
        return unit

    def _quantize_nncf(self, backends: list[str]) -> dict[str, Any]:
        """OpenVINO int8 IR of the export made by NNCF, calibrated on the same images as the QDQ model.

        NNCF keeps ``spec.int8_float_layers`` float; on the trained U²-Netp its IR passes the gate
        where the QDQ model run by OpenVINO does not (benchmarks/results/int8_trained_u2netp_cpu.md)."""
        out = self.run_dir / "artifacts" / f"{self.spec.name}-int8-nncf.xml"
        calib_dir = dict(self.options.extra).get("calib")
        key = {"step": "quantize-nncf", "onnx": self._export_fp, "calib": calib_dir or self._calib_described(),
               "num_calib": self._num_calib(), "out": str(out), "float": list(self.spec.int8_float_layers)}

        def compute() -> dict[str, Any]:
            from segdeploy.convert.nncf_quantize import nncf_quantize
            from segdeploy.convert.quantize import _calib_entries, _calib_input
            from segdeploy.zoo.checkpoints import file_sha256

            entries, source = _calib_entries(calib_dir or self._calibration(), self.spec, self._num_calib())
            inputs = [_calib_input(entry, self.spec) for entry in entries]
            nncf_quantize(self._onnx, self.spec, inputs, out, metadata={"source_onnx": str(self._onnx)})
            bin_path = out.with_suffix(".bin")
            info = json.loads(Path(str(out) + ".json").read_text())
            return {"label": "int8 nncf", "xml": str(out), "xml_sha256": file_sha256(out),
                    "bin": str(bin_path), "bin_sha256": file_sha256(bin_path),
                    "bin_bytes": bin_path.stat().st_size, "calib_source": source, "quantize": info}

        unit = self._unit("export", "int8-nncf", key, compute, _ir_intact)
        unit.update(label="int8 nncf", quantizer=NNCF_QUANTIZER, backends=backends)
        self.reporter.unit_finished("export", unit)
        if unit["status"] == "done":
            self._int8.update({b: (unit["xml"], unit["fingerprint"]) for b in backends})
        return unit

    def quantizer(self, config: Config) -> str | None:
        """Which quantizer made the int8 model ``config`` runs (None when it runs no quantized model)."""
        if config.precision != "int8" or config.backend not in self._int8:
            return None
        return NNCF_QUANTIZER if self._int8[config.backend][0].endswith(".xml") else QDQ_QUANTIZER

    def _num_calib(self) -> int:
        from segdeploy.convert.quantize import DEFAULT_NUM_CALIB

        return int(dict(self.options.extra).get("num_calib") or DEFAULT_NUM_CALIB)

    def _inputs_described(self) -> str:
        n = self.options.compare_images
        if self.options.dataset and self.options.data_root:
            return (f"first {n} images of {self.options.dataset} at {self.options.data_root} (topped up with "
                    f"synthetic images when it has fewer)")
        if dict(self.options.extra).get("images"):
            return f"first {n} photographs in {dict(self.options.extra)['images']}"
        return f"{n} synthetic photo-like images (segdeploy.recipes.demo, seed {SYNTHETIC_SEED})"

    def _deps(self, config: Config) -> dict[str, Any]:
        """What a unit of ``config`` depends on besides its own settings: the ONNX it runs."""
        onnx = None
        if config.backend != "torch":
            onnx = self._int8.get(config.backend, (None, None))[1] if config.precision == "int8" else self._export_fp
        return {"config": [config.backend, config.precision], "onnx": onnx}

    # -- runtimes -------------------------------------------------------------------------------
    def step_runtimes(self) -> dict[str, Any]:
        units = []
        for config in self.configs():
            def compute(config=config) -> dict[str, Any]:
                runtime = self.runtime(config)
                runtime.warmup((1, 3, *self.spec.input_size))
                return {"describe": _plain(runtime.describe())}

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
        configs = [c for c in self.available() if c != REFERENCE]
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
            started, began = time.perf_counter(), _utc()
            try:
                rows = self._compare(todo)
            except Exception as exc:  # noqa: BLE001 - recorded on every configuration it concerned
                rows = {c: _failure(exc) for c in todo}
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
        return {"reference": f"{REFERENCE.label}, eager, on the CPU (segdeploy.verify.compare)", "inputs": source,
                "gate": "segdeploy.verify.gate: per-image task measures on the 5th percentile and the worst image, "
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
            from segdeploy.engine.images import find_images, read_image

            return {"images": [read_image(path) for path, _ in find_images([photos])[:n]]}
        from segdeploy.recipes.demo import render_sample

        return {"images": [render_sample(i, SYNTHETIC_SEED).image for i in range(n)]}

    def _compare(self, configs: list[Config]) -> dict[Config, dict[str, Any]]:
        """One compare() over ``configs``. A failed gate is a *failed* unit (exit 3) whose reason names
        the image and the measure; a runtime error is a failed unit too (exit 4)."""
        from segdeploy.verify.compare import compare

        inputs = self._compare_inputs()
        report = compare(self.module(), combos=[(c.backend, c.precision) for c in configs],
                         device=self.options.device, onnx_path=self._onnx,
                         int8_onnx={b: path for b, (path, _) in self._int8.items()} or None,
                         seed=self.options.seed,
                         batch_size=max(1, min(4, max(self.options.batch_sizes))),
                         allow_few_images=bool(dict(self.options.extra).get("allow_few_images")),
                         progress=self.reporter.message, **inputs)
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
                reason = (f"fidelity gate failed against {REFERENCE.label}: {failures[0]}"
                          + (f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""))
                out[config] = {"status": "failed", "reason": reason, "error": "gate", "passed": False,
                               "summary": _compare_summary(row, data), "record": row}
            else:
                out[config] = {"status": "done", "reason": None, "passed": True,
                               "summary": _compare_summary(row, data), "record": row}
        return out

    # -- eval -----------------------------------------------------------------------------------
    def eval_configs(self) -> list[Config]:
        available = self.available()
        choice = self.options.eval_on
        if choice == "all" or (choice == "auto" and self.options.device.startswith("cuda")):
            return available
        if choice in ("auto", "first"):
            return available[:1]
        wanted = [Config(*item.split(":", 1)) for item in choice.split(",")]
        return [c for c in wanted if c in available] or []

    def step_eval(self) -> dict[str, Any]:
        if self.recipe.dataset is None:
            raise StepSkipped(f"recipe {self.recipe.name} has no dataset: the guide measures cosine similarity "
                              "against PyTorch only (see the compare step)")
        if not self.options.data_root:
            raise StepSkipped(f"no dataset given: pass --data-root DIR (the {self.options.dataset} folder as "
                              "distributed) to score accuracy")
        configs = self.eval_configs()
        if not configs:
            raise StepSkipped(f"no opened configuration matches --eval-on {self.options.eval_on}")
        units = []
        batch = max(1, min(8, max(self.options.batch_sizes)))
        for config in configs:
            key = {"step": "eval", **self._deps(config), "dataset": self.options.dataset,
                   "root": self.options.data_root, "limit": self.options.limit,
                   "options": dict(self.options.dataset_options), "batch": batch,
                   "protocol": self.options.wseg_protocol}

            def compute(config=config) -> dict[str, Any]:
                from segdeploy.jobs.evaluate import WsegOptions, evaluate

                wseg = WsegOptions(protocol=self.options.wseg_protocol) if self.options.wseg_protocol else None
                record = evaluate(self.spec, self.options.dataset, self.options.data_root,
                                  runtime=self.runtime(config), device=self.options.device,
                                  backend=config.backend, precision=config.precision, batch_size=batch,
                                  limit=self.options.limit, layout_options=dict(self.options.dataset_options),
                                  wseg=wseg, progress=self.reporter.show_progress)
                if not record.get("images_scored"):
                    raise RuntimeError(f"no image could be scored ({record.get('images_skipped')} skipped: "
                                       f"{(record.get('skipped') or [{}])[0].get('reason')})")
                return {"record": json.loads(json.dumps(record, default=_json_default))}

            unit = self._unit("eval", config.slug, key, compute)
            unit.update(label=config.label, backend=config.backend, precision=config.precision)
            self.reporter.unit_finished("eval", unit)
            units.append(unit)
        others = [c.label for c in self.available() if c not in configs]
        note = None
        if others:
            note = (f"Not evaluated: {', '.join(others)} (--eval-on {self.options.eval_on}); their masks are "
                    "checked against the reference by the compare step. --eval-on all scores every one.")
        return {"configs": units, "note": note, "batch_size": batch}

    # -- bench ----------------------------------------------------------------------------------
    def step_bench(self) -> dict[str, Any]:
        configs = self.available()
        if not configs:
            raise StepSkipped("no runtime configuration opened (see the runtimes step)")
        settings = {"batch_sizes": list(self.options.batch_sizes), "input_size": list(self.options.input_size),
                    "warmup": self.options.bench_warmup, "iters": self.options.bench_iters}
        units = []
        for config in configs:
            def compute(config=config) -> dict[str, Any]:
                from segdeploy.bench.harness import benchmark

                from segdeploy.recipes.conditions import watch

                runtime = self.runtime(config)
                # Load and CPU frequency around the timing itself: a contended timing says so.
                with watch() as watched:
                    report = benchmark(self.spec, config.backend, config.precision, self.options.batch_sizes,
                                       warmup=self.options.bench_warmup, iters=self.options.bench_iters,
                                       input_size=tuple(self.options.input_size), device=self.options.device,
                                       runtime=runtime, label=config.label,
                                       progress=lambda text, c=config: self.reporter.message(f"{c.label}: {text}"))
                return {"report": json.loads(report.to_json()),
                        "conditions": _plain(dataclasses.asdict(watched.conditions))}

            unit = self._unit("bench", config.slug, {"step": "bench", **self._deps(config), **settings}, compute)
            unit.update(label=config.label, backend=config.backend, precision=config.precision)
            self.reporter.unit_finished("bench", unit)
            units.append(unit)
        return {"configs": units, "settings": settings}

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
                  "started_utc": _utc(), "fingerprint": None}
        self.results["steps"]["report"] = record
        self.results["updated_utc"] = _utc()
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

        self.results["updated_utc"] = _utc()
        text = json.dumps(_finite(self.results), indent=2, default=_json_default, allow_nan=False)
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
                    out.append(f"{unit.get('label')} does not pass the fidelity gate against {REFERENCE.label}: "
                               "its masks differ beyond the tolerance (see Fidelity).")
        if not self.options.device.startswith("cuda"):
            out.append("Measured on a CPU: the guides' throughput rows come from accelerators (Ascend, MLU, T4) "
                       "and are context, not a target for this machine.")
        return out

    def exit_code(self) -> int:
        """0 when nothing failed (skips are fine); 3 when a fidelity gate failed and nothing else did;
        4 when a step or a configuration failed otherwise (a runtime error, a crash)."""
        from segdeploy.core.errors import EXIT_GATE_FAILED, EXIT_OK, EXIT_RUNTIME

        gate = runtime = False
        for name in STEP_NAMES:
            step = self.results["steps"][name]
            units = (step.get("result") or {}).get("configs", []) or []
            failed = [u for u in units if u.get("status") == "failed"]
            gate = gate or any(u.get("error") == "gate" for u in failed)
            runtime = runtime or any(u.get("error") != "gate" for u in failed)
            if step["status"] == "failed" and not failed:
                runtime = True
        return EXIT_RUNTIME if runtime else EXIT_GATE_FAILED if gate else EXIT_OK


def _pending() -> dict[str, Any]:
    return {"status": "skipped", "reason": "not run yet", "result": None, "wall_s": None, "resumed": False,
            "started_utc": None, "fingerprint": None}


def _finite(obj: Any) -> Any:
    """JSON has no NaN / Infinity: such a number (e.g. a metric of an empty set) is written as null."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _plain(data: Any) -> Any:
    return json.loads(json.dumps(data, default=_json_default))


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    return str(obj)


def _failure(exc: BaseException) -> dict[str, Any]:
    tail = traceback.format_exc().strip().splitlines()[-6:]
    return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}", "traceback": tail}


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


def run_recipe(recipe: str | Recipe, run_dir: str | os.PathLike, *, force: bool = False, skip: tuple[str, ...] = (),
               reporter: Reporter | None = None, **options: Any) -> dict[str, Any]:
    """Python API of ``segdeploy run``: resolve options, run every step, return results.json's content."""
    runner = Runner(resolve_options(recipe, **options), run_dir, force=force, skip=skip, reporter=reporter)
    return runner.run()
