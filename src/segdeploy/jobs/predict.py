"""Turn images into masks: the Python API (:func:`predict`) and the file-to-file job behind
``segdeploy predict`` (:func:`predict_files`)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from segdeploy.engine.images import ImageReadError, find_images, read_image
from segdeploy.engine.writers import atomic_write_bytes, atomic_write_text, encode_png, write_npy
from segdeploy.engine.pipeline import StageTimes, stream_predictions
from segdeploy.core.specs import ModelSpec
from segdeploy.core.registry import get_spec
from segdeploy.tasks import Prediction, get_task


def open_model_runtime(model, *, weights=None, backend: str = "auto", device: str = "cpu",
                       precision: str | None = None, **options):
    """A runtime for ``model`` (a registry name, a ModelSpec, or an nn.Module built by create_model)."""
    from segdeploy.backends import open_runtime

    return open_runtime(model, backend=backend, device=device, precision=precision, weights=weights, **options)


def _spec_of(model) -> ModelSpec:
    if isinstance(model, (str, ModelSpec)):
        return get_spec(model)
    spec = getattr(model, "segdeploy_spec", None) or getattr(model, "spec", None)
    if spec is None:
        raise TypeError("model must be a registry name, a ModelSpec, a module from create_model, or a Runtime")
    return spec


def predict(model, images: Iterable, *, weights=None, backend: str = "auto", device: str = "cpu",
            precision: str | None = None, batch_size: int = 1, return_maps: bool = False, runtime=None):
    """Predict masks for images given as arrays (HxWx3 uint8 RGB) or file paths.

    Args:
        model: registry name, ModelSpec, or a module returned by :func:`segdeploy.create_model`.
        images: numpy arrays and/or paths.
        weights: checkpoint path or "random" (not needed when ``model`` is a module or ``runtime``
            is given).
        return_maps: return :class:`~segdeploy.engine.transforms.Prediction` objects (map + mask) instead
            of masks only.
        runtime: an already opened runtime to reuse across calls.

    Returns:
        A list, one entry per image in order: uint8 HxW masks at the original size (saliency: 0..255
        map; binary: 0/1; semantic: class ids), or Predictions with ``return_maps``.

    Raises:
        ImageReadError: a path could not be read (the message names it).
    """
    spec = _spec_of(model)
    if runtime is None:
        runtime = open_model_runtime(model, weights=weights, backend=backend, device=device, precision=precision)
    items = list(images)

    def read(item):
        return item if isinstance(item, np.ndarray) else read_image(item)

    results = []
    for outcome in stream_predictions(items, read, runtime, spec, batch_size=batch_size):
        if not outcome.ok:
            raise outcome.error
        results.append(outcome.prediction if return_maps else outcome.prediction.mask)
    return results


@dataclass
class PredictSummary:
    """What a ``predict_files`` run did. Every number the CLI prints is here."""

    model: str
    found: int = 0
    written: int = 0
    skipped: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    images_per_s: float | None = None
    weights: dict[str, Any] | None = None
    runtime: dict[str, Any] | None = None
    selection: dict[str, Any] | None = None
    stages: dict[str, Any] | None = None
    output_dir: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def mask_image(pred: Prediction, spec: ModelSpec) -> tuple[np.ndarray, list[int] | None]:
    """The array written as ``<stem>.png`` and its palette (the task chooses the format)."""
    return get_task(spec).mask_image(pred)


def cutout_image(image: np.ndarray, pred: Prediction, spec: ModelSpec) -> np.ndarray:
    """RGBA cut-out: the original pixels with the task's alpha (saliency map, or the mask)."""
    return get_task(spec).cutout(image, pred)


def output_paths(inputs: list[tuple[Path, Path]], out_dir: Path) -> list[Path]:
    """``OUT/<relative folder>/<stem>.png`` per input; inputs sharing a stem keep their suffix."""
    stems: dict[Path, int] = {}
    for _, rel in inputs:
        key = rel.parent / rel.stem
        stems[key] = stems.get(key, 0) + 1
    paths = []
    for _, rel in inputs:
        key = rel.parent / rel.stem
        name = rel.stem if stems[key] == 1 else rel.name  # a.jpg + a.png → a.jpg.png, a.png.png
        paths.append(out_dir / rel.parent / f"{name}.png")
    return paths


def planned_outputs(target: Path, *, cutout: bool = False, save_prob: bool = False) -> list[Path]:
    """Every file one input produces: ``<stem>.png``, ``<stem>_cutout.png``, ``<stem>.npy``."""
    paths = [target]
    if cutout:
        paths.append(target.with_name(target.stem + "_cutout.png"))
    if save_prob:
        paths.append(target.with_suffix(".npy"))
    return paths


def write_prediction(target: Path, image: np.ndarray, pred: Prediction, spec: ModelSpec, *,
                     cutout: bool = False, save_prob: bool = False) -> None:
    """Encode and atomically write one input's outputs (the files :func:`planned_outputs` names).

    Shared by the local engine's sink and the Ray engine's workers, so both write identical bytes.
    """
    array, palette = mask_image(pred, spec)
    atomic_write_bytes(target, encode_png(array, palette))
    if cutout:
        atomic_write_bytes(target.with_name(target.stem + "_cutout.png"), encode_png(cutout_image(image, pred, spec)))
    if save_prob:
        write_npy(target.with_suffix(".npy"), pred.map.astype(np.float32))


def predict_files(model: str, inputs: list[str], out_dir: str | os.PathLike, *, weights=None,
                  recursive: bool = False, batch_size: int = 1, backend: str = "auto", device: str = "cpu",
                  precision: str | None = None, cutout: bool = False, save_prob: bool = False,
                  overwrite: bool = False, workers: int | None = None, progress: bool = True,
                  on_progress: Callable[[int], None] | None = None, runtime=None, seed: int = 0) -> PredictSummary:
    """Predict masks for files, folders and glob patterns and write them under ``out_dir``.

    Outputs per input: ``<stem>.png`` (saliency: 8-bit map; binary: 0/255; semantic: palette PNG),
    ``<stem>_cutout.png`` with ``cutout``, ``<stem>.npy`` (float32 map) with ``save_prob``. Existing
    outputs are skipped unless ``overwrite``; every file is written atomically. Unreadable inputs are
    recorded in ``summary.failed`` with their reason and the run goes on.
    """
    spec = get_spec(model)
    out_dir = Path(out_dir)
    found = find_images(inputs, recursive=recursive)
    targets = output_paths(found, out_dir)
    summary = PredictSummary(model=spec.name, found=len(found), output_dir=str(out_dir))

    todo = []
    for (path, _), target in zip(found, targets):
        if not overwrite and all(p.exists() for p in planned_outputs(target, cutout=cutout, save_prob=save_prob)):
            summary.skipped += 1
        else:
            todo.append((path, target))

    start = time.perf_counter()
    if todo:
        if runtime is None:
            runtime = open_model_runtime(spec.name, weights=weights, backend=backend, device=device,
                                         precision=precision, seed=seed)
        summary.runtime = runtime.describe() if hasattr(runtime, "describe") else None
        summary.selection = getattr(runtime, "selection", None)
        summary.weights = weights_of(runtime)

        def read(entry):
            return read_image(entry[0])

        def sink(entry, image, pred):
            write_prediction(entry[1], image, pred, spec, cutout=cutout, save_prob=save_prob)

        times = StageTimes()
        bar = _progress_bar(progress, len(todo), spec.name)
        with bar:
            task = bar.add_task("predict", total=len(todo)) if bar.enabled else None
            for outcome in stream_predictions(todo, read, runtime, spec, batch_size=batch_size, workers=workers,
                                              sink=sink, times=times):
                if outcome.ok:
                    summary.written += 1
                else:
                    reason = outcome.error.reason if isinstance(outcome.error, ImageReadError) else \
                        f"{type(outcome.error).__name__}: {outcome.error}"
                    summary.failed.append({"path": str(outcome.item[0]), "reason": reason})
                if task is not None:
                    bar.advance(task)
                if on_progress:
                    on_progress(1)
        summary.stages = times.to_dict()
    summary.seconds = round(time.perf_counter() - start, 3)
    processed = summary.written + len(summary.failed)
    summary.images_per_s = round(summary.written / summary.seconds, 3) if summary.seconds > 0 and processed else None
    return summary


def weights_of(runtime) -> dict | None:
    """The weights record (kind, path, sha256 / seed) of the network a runtime runs, if known."""
    record = getattr(runtime, "weights", None) or getattr(runtime, "weights_record", None)
    if record is None and hasattr(runtime, "describe"):
        record = runtime.describe().get("weights")
    if record is None:
        return None
    return record.to_dict() if hasattr(record, "to_dict") else dict(record)


class _NoBar:
    enabled = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *a, **k):
        return None


def _progress_bar(enabled: bool, total: int, label: str):
    if not enabled or total == 0:
        return _NoBar()
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    bar = Progress(TextColumn(f"[bold]{label}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), transient=False)
    bar.enabled = True
    return bar


def write_summary_json(summary: PredictSummary, path: str | os.PathLike) -> None:
    from segdeploy.core.environment import environment

    atomic_write_text(path, json.dumps({**summary.to_dict(), "environment": environment()}, indent=2))
