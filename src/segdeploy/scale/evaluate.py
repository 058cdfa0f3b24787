"""``segdeploy eval --engine ray``: score shards of a dataset on Ray and merge the metric states.

Each block of samples is read + preprocessed in a Ray task and scored by an actor, which returns the
block's metric state (the task's own metric object, pickled). The driver merges the states with the
metric's exact ``merge`` (:mod:`segdeploy.tasks.metrics`), so the dataset score equals the local
engine's (tested to 1e-9). The record has the local engine's keys (:func:`segdeploy.jobs.evaluate.evaluate`).
"""

from __future__ import annotations

import json
import os
import pickle
import time
from typing import Any

from segdeploy.core.errors import UsageError
from segdeploy.core.registry import get_spec
from segdeploy.jobs.evaluate import evaluation_record, test_time_protocol
from segdeploy.jobs.options import EvalOptions
from segdeploy.jobs.predict import progress_bar
from segdeploy.scale.cluster import RayOptions, pool_arguments, ray_session
from segdeploy.scale.workers import EvalActor, actor_request, map_rows, read_eval_rows
from segdeploy.tasks import get_task


def evaluate_ray(model: str, dataset: str, data_root: str | os.PathLike, options: EvalOptions | None = None, *,
                 ray: RayOptions, progress: bool = True) -> dict[str, Any]:
    """Like :func:`segdeploy.jobs.evaluate.evaluate`, with per-shard scoring on a Ray actor pool.

    The dataset root (and ``save_masks``) must be visible to every worker node at the same path.
    Semantic models run the single-view protocol only (the multi-scale + CRF protocol is per image
    and CPU-bound; run it with the local engine).
    """
    from segdeploy.data import get_layout

    options = options or EvalOptions()
    spec = get_spec(model)
    layout = get_layout(dataset, data_root, limit=options.limit, **dict(options.layout_options or {}))
    task_obj = get_task(spec)
    task_obj.check_dataset(spec, layout)
    protocol = test_time_protocol(spec, options.protocol)
    if protocol is not None:
        raise UsageError(f"{spec.name}: --engine ray runs --protocol single only; use --engine local for "
                         f"{protocol.name}")
    metric = task_obj.metric(spec, layout)
    batch_size, save_masks = options.batch_size, options.save_masks
    n = len(layout.samples)
    skipped: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    with ray_session(ray) as info:
        import ray as ray_module

        start = time.perf_counter()
        blocks = max(1, min(n, 4 * ray.workers))
        ds = ray_module.data.from_items([{"index": i} for i in range(n)], override_num_blocks=blocks)
        ds = ds.map_batches(map_rows(read_eval_rows, model=spec.name, layout=layout),
                            batch_size=batch_size * 4, num_cpus=ray.read_cpus)
        ds = ds.map_batches(EvalActor, batch_size=batch_size * 4,
                            fn_constructor_args=(spec.name, actor_request(options.runtime, ray.cpus_per_worker),
                                                 batch_size),
                            fn_constructor_kwargs={"layout": layout,
                                                   "save_masks": str(save_masks) if save_masks else None,
                                                   "kill_after": ray.kill_after,
                                                   "kill_marker": ray.kill_marker},
                            **pool_arguments(ray))
        bar = progress_bar(progress, n, f"eval {spec.name} on {layout.name} (ray)")
        with bar:
            task = bar.add_task("eval", total=n) if bar.enabled else None
            for row in ds.iter_rows():
                metric.merge(pickle.loads(row["state"]))
                skipped.extend(json.loads(row["skipped"]))
                meta = meta or json.loads(row["meta"])
                if task is not None:
                    bar.advance(task, int(row["items"]))
        wall = time.perf_counter() - start
    skipped.sort(key=lambda item: item["index"])  # the local engine's order: the split's
    skipped = [{k: v for k, v in item.items() if k != "index"} for item in skipped]
    if metric.count + len(skipped) != n:
        raise RuntimeError(f"Ray scored {metric.count} and skipped {len(skipped)} of {n} samples; some were lost")
    stages = {"engine": "ray", "ray": {**info, "workers": ray.workers, "cpus_per_worker": ray.cpus_per_worker,
                                       "gpus_per_worker": ray.gpus_per_worker,
                                       "merge": "per-block metric states merged exactly (metric.merge)"}}
    return evaluation_record(spec, layout, metric, skipped, wall, weights=meta.get("weights"), protocol="single",
                             runtime=meta.get("runtime"), stages=stages)
