"""The eval and bench steps: accuracy on the dataset, throughput and latency per batch size."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from segdeploy.recipes.unit_store import Config, StepSkipped, json_default, plain


class MeasureSteps:
    """``step_eval`` and ``step_bench``; mixed into the Runner (see :mod:`segdeploy.recipes.runner`)."""

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
                   "protocol": self.options.protocol}

            def compute(config=config) -> dict[str, Any]:
                from segdeploy.jobs.evaluate import evaluate
                from segdeploy.jobs.options import EvalOptions

                protocol = {"name": self.options.protocol} if self.options.protocol else None
                options = EvalOptions.of(device=self.options.device, backend=config.backend,
                                         precision=config.precision, batch_size=batch, limit=self.options.limit,
                                         layout_options=dict(self.options.dataset_options), protocol=protocol)
                record = evaluate(self.spec, self.options.dataset, self.options.data_root, options,
                                  runtime=self.runtime(config), progress=self.reporter.show_progress)
                if not record.get("images_scored"):
                    raise RuntimeError(f"no image could be scored ({record.get('images_skipped')} skipped: "
                                       f"{(record.get('skipped') or [{}])[0].get('reason')})")
                return {"record": json.loads(json.dumps(record, default=json_default))}

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
                from segdeploy.bench.options import BenchOptions

                from segdeploy.recipes.conditions import watch

                runtime = self.runtime(config)
                bench_options = BenchOptions(
                    backend=config.backend, precision=config.precision, batch_sizes=self.options.batch_sizes,
                    warmup=self.options.bench_warmup, iters=self.options.bench_iters,
                    input_size=tuple(self.options.input_size), device=self.options.device, label=config.label)
                # Load and CPU frequency around the timing itself: a contended timing says so.
                with watch() as watched:
                    report = benchmark(self.spec, bench_options, runtime=runtime,
                                       progress=lambda text, c=config: self.reporter.message(f"{c.label}: {text}"))
                return {"report": json.loads(report.to_json()),
                        "conditions": plain(dataclasses.asdict(watched.conditions))}

            unit = self._unit("bench", config.slug, {"step": "bench", **self._deps(config), **settings}, compute)
            unit.update(label=config.label, backend=config.backend, precision=config.precision)
            self.reporter.unit_finished("bench", unit)
            units.append(unit)
        return {"configs": units, "settings": settings}
