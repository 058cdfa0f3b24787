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
from typing import Any, Callable

import numpy as np

from segdeploy.engine.writers import atomic_write_text, write_png
from segdeploy.tasks import get_task
from segdeploy.engine.pipeline import StageTimes, stream_predictions
from segdeploy.jobs.predict import progress_bar, weights_of
from segdeploy.core.specs import ModelSpec
from segdeploy.core.registry import get_spec

WSEG_PROTOCOLS = ("single", "multiscale", "multiscale+crf")


@dataclass(frozen=True)
class WsegOptions:
    """Test-time protocol for semantic models (1-stage wseg, docs/models.md §5).

    ``single`` = one view at native size (the registry's decode); ``multiscale`` = scales 1, 0.5,
    1.5, 2 with flips, centre-padded to ``pad_size``, merged as upstream; ``multiscale+crf`` adds the
    dense CRF (the number the wseg README and seed guide 004 report, 62.7 % mIoU).
    """

    protocol: str = "multiscale+crf"
    scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
    flip: bool = True
    pad_size: tuple[int, int] = (1024, 1024)



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

def evaluate(model: str, dataset: str, data_root: str | os.PathLike, *, weights=None, backend: str = "auto",
             device: str = "cpu", precision: str | None = None, batch_size: int = 1, limit: int | None = None,
             save_masks: str | os.PathLike | None = None, layout_options: dict[str, Any] | None = None,
             wseg: WsegOptions | None = None, workers: int | None = None, progress: bool = True,
             runtime=None, on_item: Callable[[], None] | None = None, seed: int = 0,
             runtime_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score ``model`` on ``dataset`` and return the JSON-ready evaluation record.

    Args:
        model: registry name.
        dataset: layout name (see ``segdeploy.data.list_layouts``).
        data_root: the dataset folder as distributed.
        limit: score only the first N samples of the split.
        save_masks: folder to write the scored masks into (``<id>.png``).
        layout_options: extra reader options (split file, split name, ...).
        wseg: protocol for semantic models (default: upstream multi-scale + CRF).
        runtime: an opened runtime to reuse (else one is opened from backend/device/precision).

    Returns:
        dict with model, weights (incl. sha256), dataset description, counts, skipped items with
        reasons, metrics, metric definitions, resolution/threshold policy, runtime, wall time.
    """
    from segdeploy.data import get_layout

    spec = get_spec(model)
    layout = get_layout(dataset, data_root, limit=limit, **(layout_options or {}))
    task_obj = get_task(spec)
    task_obj.check_dataset(spec, layout)
    if runtime is None:
        from segdeploy.backends import open_runtime

        runtime = open_runtime(spec.name, backend=backend, device=device, precision=precision, weights=weights,
                               seed=seed, **(runtime_options or {}))
    metric = task_obj.metric(spec, layout)
    save_dir = Path(save_masks) if save_masks else None
    skipped: list[dict[str, str]] = []
    times = StageTimes()
    start = time.perf_counter()
    protocol = "single"

    bar, task = _progress(progress, len(layout), f"eval {spec.name} on {layout.name}")
    with bar:
        if spec.protocol is not None and (wseg or WsegOptions()).protocol != "single":
            options = wseg or WsegOptions()
            protocol = options.protocol
            scored = _eval_multiscale(layout, runtime, spec, options, metric, save_dir, skipped, bar, task, workers)
        else:
            scored = _eval_stream(layout, runtime, spec, metric, save_dir, skipped, batch_size, workers, times,
                                  bar, task, on_item)
    wall = time.perf_counter() - start

    record = evaluation_record(spec, layout, metric, skipped, wall, weights=weights_of(runtime), protocol=protocol,
                               runtime=runtime.describe() if hasattr(runtime, "describe") else None,
                               stages=times.to_dict() if protocol == "single" else None, scored=bool(scored))
    if protocol != "single":
        record["policy"]["wseg"] = {"scales": list((wseg or WsegOptions()).scales),
                                    "flip": (wseg or WsegOptions()).flip,
                                    "pad_size": list((wseg or WsegOptions()).pad_size),
                                    "fp_cut": 0.1, "bg_pow": 3, "crf": protocol.endswith("crf")}
    return record


def _runtime_failed(runtime, spec, sample, exc: BaseException):
    """The InferenceError that stops an evaluation when the runtime raised on ``sample``."""
    from segdeploy.core.errors import InferenceError

    name = getattr(runtime, "name", type(runtime).__name__)
    return InferenceError(f"{name} {getattr(runtime, 'precision', '')} failed on {sample.image_path}: "
                          f"{type(exc).__name__}: {exc}. Nothing was scored (an image the runtime cannot run "
                          "is never counted as skipped); fix the runtime (e.g. a smaller --batch-size) and rerun")


def _eval_stream(layout, runtime, spec, metric, save_dir, skipped, batch_size, workers, times, bar, task,
                 on_item) -> bool:
    from segdeploy.engine.images import ImageReadError

    masks: dict[str, np.ndarray] = {}

    def read(sample):
        image, mask = layout.load(sample)
        if mask is None:
            raise ValueError("no ground-truth mask")
        masks[sample.id] = mask
        return image

    for outcome in stream_predictions(layout, read, runtime, spec, batch_size=batch_size, workers=workers,
                                      times=times):
        sample = outcome.item
        mask = masks.pop(sample.id, None)
        if not outcome.ok and outcome.stage != "read":
            raise _runtime_failed(runtime, spec, sample, outcome.error) from outcome.error
        if not outcome.ok:
            reason = outcome.error.reason if isinstance(outcome.error, ImageReadError) else str(outcome.error)
            skipped.append({"id": sample.id, "file": str(sample.image_path), "reason": reason})
        else:
            metric.update(get_task(spec).metric_input(outcome.prediction), get_task(spec).target(layout, mask))
            if save_dir is not None:
                array, palette = get_task(spec).mask_image(outcome.prediction)
                write_png(save_dir / f"{sample.id}.png", array, palette)
        if task is not None:
            bar.advance(task)
        if on_item:
            on_item()
    return True


def _eval_multiscale(layout, runtime, spec, options: WsegOptions, metric, save_dir, skipped, bar, task,
                     workers) -> bool:
    import importlib

    module_name, _, attr = spec.protocol.partition(":")
    run_protocol = getattr(importlib.import_module(module_name), attr)
    use_crf = options.protocol.endswith("crf")
    with ThreadPoolExecutor(max(1, workers or 2)) as pool:
        futures = [pool.submit(layout.load, sample) for sample in layout.samples[:2]]
        for index, sample in enumerate(layout.samples):
            future = futures[index]
            if index + 2 < len(layout.samples):
                futures.append(pool.submit(layout.load, layout.samples[index + 2]))
            try:
                image, mask = future.result()
            except Exception as exc:  # an unreadable image or mask is recorded, the split goes on
                reason = getattr(exc, "reason", None) or str(exc)
                skipped.append({"id": sample.id, "file": str(sample.image_path), "reason": reason})
                result = None
            else:
                try:
                    result = run_protocol(image, runtime.run, crf=use_crf, scales=options.scales, flip=options.flip,
                                          pad_size=options.pad_size)
                except Exception as exc:  # the runtime failed: stop, score nothing
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise _runtime_failed(runtime, spec, sample, exc) from exc
            if result is not None:
                labels = result.labels_crf if use_crf else result.labels
                metric.update(labels, mask)
                if save_dir is not None:
                    write_png(save_dir / f"{sample.id}.png", labels, get_task(spec).mask_image(_labels_only(labels))[1])
            futures[index] = None
            if task is not None:
                bar.advance(task)
    return True


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
