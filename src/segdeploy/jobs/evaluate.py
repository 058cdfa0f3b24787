"""Accuracy evaluation: any registry model, any runtime, on a dataset read as distributed.

Predictions are always produced at the image's original size, which the dataset reader checks to be
the ground truth's size: the prediction is resized to the ground truth, never the reverse. Masks
saved with ``save_masks`` are exactly the arrays that were scored.

Failures: an image or ground-truth mask that cannot be read, or whose sizes differ, is *skipped*
with its reason (recorded; the CLI exits 1). A runtime that raises on any image stops the
evaluation with :class:`~segdeploy.core.errors.InferenceError` (exit 4) and nothing is scored: an
out-of-memory on the large images must not silently drop the hard cases from the metric.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from segdeploy.engine.inference_threads import InferenceThreads, calls_in_flight, split_forward
from segdeploy.engine.writers import atomic_write_text, write_png
from segdeploy.tasks import get_task
from segdeploy.engine.pipeline import StageTimes, StreamOptions, stream_predictions
from segdeploy.jobs.options import EvalOptions
from segdeploy.jobs.predict import progress_bar, weights_of
from segdeploy.core.specs import ModelSpec
from segdeploy.core.registry import get_spec

def test_time_protocol(spec: ModelSpec, settings: Mapping[str, Any] | None = None):
    """The model's test-time protocol built from ``settings`` (None: its defaults), or None when the
    model has none or the settings ask for one view per image (the streaming path)."""
    if spec.protocol is None:
        return None
    import importlib

    module_name, _, attr = spec.protocol.partition(":")
    protocol = getattr(importlib.import_module(module_name), attr)(**dict(settings or {}))
    return None if protocol.name == "single" else protocol


def evaluation_record(spec, layout, metric, skipped: list[dict], wall: float, *, weights, protocol: str, runtime,
                      stages, scored: bool = True) -> dict[str, Any]:
    """The evaluation record every engine returns (local threads or Ray): scores, what was skipped
    and why, the scoring policy, the runtime and the timings."""
    return {
        "kind": "evaluation",
        "model": spec.name,
        "task": spec.task,
        "weights": weights,
        "dataset": layout.describe(),
        "images_scored": metric.count if scored else 0,
        "images_skipped": len(skipped),
        "skipped": skipped,
        "metrics": metric.compute() if metric.count else {},
        "metric_definitions": metric.definition,
        "policy": {
            "resolution": "predictions produced at the image's original size (= ground-truth size); "
                          "the ground truth is never resized",
            "decode": get_task(spec).decode_policy(spec),
            "protocol": protocol,
        },
        "runtime": runtime,
        "wall_s": round(wall, 3),
        "images_per_s": round(metric.count / wall, 3) if wall > 0 and metric.count else None,
        "stages": stages,
    }

@dataclass
class _Scoring:
    """What every sample of one evaluation goes through: the runtime, the metric, the record of
    skipped samples, the optional mask folder and the progress bar."""

    layout: Any
    runtime: Any
    spec: ModelSpec
    metric: Any
    save_dir: Path | None
    skipped: list[dict[str, str]]
    bar: Any
    task: Any

    def skip(self, sample, reason: str) -> None:
        self.skipped.append({"id": sample.id, "file": str(sample.image_path), "reason": reason})

    def advance(self, share: float = 1.0) -> None:
        """Move the bar by ``share`` of one sample (a part of a protocol's views, or a whole sample)."""
        if self.task is not None:
            self.bar.advance(self.task, share)


def evaluate(model: str, dataset: str, data_root: str | os.PathLike, options: EvalOptions | None = None, *,
             progress: bool = True, runtime=None, on_item: Callable[[], None] | None = None) -> dict[str, Any]:
    """Score ``model`` on ``dataset`` and return the JSON-ready evaluation record.

    Args:
        model: registry name.
        dataset: layout name (see ``segdeploy.data.list_layouts``).
        data_root: the dataset folder as distributed.
        options: runtime, batch size, limit, mask folder, reader options and test-time protocol
            (:class:`~segdeploy.jobs.options.EvalOptions`; a semantic model's protocol defaults to
            upstream multi-scale + CRF).
        runtime: an opened runtime to reuse (else ``options.runtime`` is opened).
        on_item: called after each sample (a caller's own progress).

    Returns:
        dict with model, weights (incl. sha256), dataset description, counts, skipped items with
        reasons, metrics, metric definitions, resolution/threshold policy, runtime, wall time.
    """
    from segdeploy.data import get_layout

    options = options or EvalOptions()
    spec = get_spec(model)
    layout = get_layout(dataset, data_root, limit=options.limit, **dict(options.layout_options or {}))
    task_obj = get_task(spec)
    task_obj.check_dataset(spec, layout)
    if runtime is None:
        from segdeploy.jobs.session import open_model_runtime

        runtime = open_model_runtime(spec.name, options.runtime)
    times = StageTimes()
    start = time.perf_counter()
    protocol = test_time_protocol(spec, options.protocol)
    bar, task = _progress(progress, len(layout), f"eval {spec.name} on {layout.name}")
    scoring = _Scoring(layout, runtime, spec, task_obj.metric(spec, layout),
                       Path(options.save_masks) if options.save_masks else None, [], bar, task)
    with bar:
        if protocol is not None:
            _eval_with_protocol(scoring, protocol, options.workers)
        else:
            _eval_stream(scoring, StreamOptions(batch_size=options.batch_size, workers=options.workers), times,
                         on_item)
    wall = time.perf_counter() - start
    record = evaluation_record(spec, layout, scoring.metric, scoring.skipped, wall, weights=weights_of(runtime),
                               protocol=protocol.name if protocol else "single",
                               runtime=runtime.describe() if hasattr(runtime, "describe") else None,
                               stages=None if protocol else times.to_dict())
    if protocol is not None:
        record["policy"]["test_time_protocol"] = protocol.describe()
    return record


def _runtime_failed(runtime, spec, sample, exc: BaseException):
    """The InferenceError that stops an evaluation when the runtime raised on ``sample``."""
    from segdeploy.core.errors import InferenceError

    name = getattr(runtime, "name", type(runtime).__name__)
    return InferenceError(f"{name} {getattr(runtime, 'precision', '')} failed on {sample.image_path}: "
                          f"{type(exc).__name__}: {exc}. Nothing was scored (an image the runtime cannot run "
                          "is never counted as skipped); fix the runtime (e.g. a smaller --batch-size) and rerun")


def _eval_stream(scoring: _Scoring, stream: StreamOptions, times: StageTimes, on_item) -> None:
    """Score the layout's samples through the streaming pipeline (one view per image)."""
    from segdeploy.engine.images import ImageReadError

    spec, layout, task = scoring.spec, scoring.layout, get_task(scoring.spec)
    masks: dict[str, np.ndarray] = {}

    def read(sample):
        image, mask = layout.load(sample)
        if mask is None:
            raise ValueError("no ground-truth mask")
        masks[sample.id] = mask
        return image

    for outcome in stream_predictions(layout, read, scoring.runtime, spec, stream, times=times):
        sample = outcome.item
        mask = masks.pop(sample.id, None)
        if not outcome.ok and outcome.stage != "read":
            raise _runtime_failed(scoring.runtime, spec, sample, outcome.error) from outcome.error
        if not outcome.ok:
            scoring.skip(sample, outcome.error.reason if isinstance(outcome.error, ImageReadError)
                         else str(outcome.error))
        else:
            scoring.metric.update(task.metric_input(outcome.prediction), task.target(layout, mask))
            if scoring.save_dir is not None:
                array, palette = task.mask_image(outcome.prediction)
                write_png(scoring.save_dir / f"{sample.id}.png", array, palette)
        scoring.advance()
        if on_item:
            on_item()


def _eval_with_protocol(scoring: _Scoring, protocol, workers: int | None) -> None:
    """Score the layout's samples with the model's test-time protocol (many views per image),
    reading the next two images while the current one runs. The views run in inference threads,
    split over the calls the runtime takes at once (every stream busy), and the main thread waits
    for them interruptibly (Ctrl-C is not held up by a forward pass of a minute)."""
    threads = InferenceThreads(calls_in_flight(scoring.runtime))
    forward = split_forward(scoring.runtime, threads, on_part=scoring.advance)
    try:
        _score_views(scoring, protocol, forward, workers)
    finally:
        threads.close(cancel=True)


def _score_views(scoring: _Scoring, protocol, forward, workers: int | None) -> None:
    spec, layout, runtime = scoring.spec, scoring.layout, scoring.runtime
    with ThreadPoolExecutor(max(1, workers or 2)) as pool:
        futures = [pool.submit(layout.load, sample) for sample in layout.samples[:2]]
        for index, sample in enumerate(layout.samples):
            future = futures[index]
            if index + 2 < len(layout.samples):
                futures.append(pool.submit(layout.load, layout.samples[index + 2]))
            try:
                image, mask = future.result()
            except Exception as exc:  # an unreadable image or mask is recorded, the split goes on
                scoring.skip(sample, getattr(exc, "reason", None) or str(exc))
                scoring.advance()  # a scored sample's bar moves with its views (split_forward's on_part)
                labels = None
            else:
                try:
                    labels = protocol.labels(image, forward)
                except Exception as exc:  # the runtime failed: stop, score nothing
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise _runtime_failed(runtime, spec, sample, exc) from exc
            if labels is not None:
                scoring.metric.update(labels, mask)
                if scoring.save_dir is not None:
                    write_png(scoring.save_dir / f"{sample.id}.png", labels,
                              get_task(spec).mask_image(_labels_only(labels))[1])
            futures[index] = None


def _labels_only(labels: np.ndarray):
    from segdeploy.tasks import Prediction

    return Prediction(map=labels, mask=labels)


def _progress(enabled: bool, total: int, label: str):
    bar = progress_bar(enabled, total, label)
    task = bar.add_task(label, total=total) if getattr(bar, "enabled", False) else None
    return bar, task


def write_record(record: dict, path: str | os.PathLike) -> None:
    from segdeploy.core.environment import environment

    atomic_write_text(path, json.dumps({**record, "environment": environment()}, indent=2, default=str))
