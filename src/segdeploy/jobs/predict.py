"""Turn images into masks: the Python API (:func:`predict`), the file-to-file job behind
``segdeploy predict`` (:func:`predict_files`) and its one-file / stdin-stdout form (:func:`predict_one`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from segdeploy.core.errors import ImageReadError, InferenceError, UsageError
from segdeploy.core.registry import get_spec
from segdeploy.core.specs import ModelSpec
from segdeploy.engine.images import DEFAULT_MAX_PIXELS, load_image, read_image
from segdeploy.engine.pipeline import StageTimes, StreamOptions, is_out_of_memory, stream_predictions
from segdeploy.engine.transforms import InputPolicy
from segdeploy.engine.writers import PublishGate, atomic_write_bytes, atomic_write_text, encode_png, write_npy
from segdeploy.engine.inference_threads import calls_in_flight
from segdeploy.jobs import session as session_module
from segdeploy.jobs.outputs import encode_output, refuse_aliased_output
from segdeploy.jobs.options import PredictOptions
from segdeploy.jobs.plan import PredictSummary, failure_reason, plan_predict_job
from segdeploy.jobs.session import Session
from segdeploy.jobs.sizing import check_memory
from segdeploy.tasks import Prediction, get_task


def predict(model, images, *, weights=None, backend: str = "auto", device: str = "cpu",
            precision: str | None = None, batch_size: int = 1, return_maps: bool = False, runtime=None,
            max_size: int | None | str = "spec"):
    """Predict masks for one image or many.

    Args:
        model: registry name, ModelSpec, or a module returned by :func:`segdeploy.create_model`.
        images: a path (str / PathLike, never iterated as characters), encoded bytes, a PIL image,
            an HxWx3 uint8 array, or a list of those.
        weights: checkpoint path, variant name or "random" (not needed with a module or ``runtime``).
        return_maps: return :class:`~segdeploy.tasks.Prediction` objects (map + mask) instead of masks.
        runtime: an already opened runtime to reuse (or use :class:`segdeploy.Session`).
        max_size: longest side for native-resolution models ("spec": the model's default; 0: none).

    Returns:
        For one input, one uint8 HxW mask at the original size (saliency: 0..255 map; binary: 0/1;
        semantic: class ids); for a list, a list in order. Predictions with ``return_maps``.

    Raises:
        ImageReadError: a path could not be read (the message names it).
    """
    session = Session(model, weights, backend, device=device, precision=precision, batch_size=batch_size,
                      max_size=max_size, runtime=runtime)
    return session.predict(images, return_maps=return_maps)


def mask_image(pred: Prediction, spec: ModelSpec) -> tuple[np.ndarray, list[int] | None]:
    """The array written as ``<stem>.png`` and its palette (the task chooses the format)."""
    return get_task(spec).mask_image(pred)


def cutout_image(image: np.ndarray, pred: Prediction, spec: ModelSpec,
                 background: tuple[int, ...] | None = None) -> np.ndarray:
    """RGBA cut-out: the original pixels with the task's alpha, or composited onto ``background``."""
    return get_task(spec).cutout(image, pred, background)


def _original_pixels(source, image: np.ndarray, pred: Prediction, max_pixels) -> np.ndarray:
    """The full-size image for a cut-out (read again when the input policy had reduced it)."""
    if image.shape[:2] == pred.mask.shape[:2]:
        return image
    return read_image(source, max_pixels=max_pixels)


def write_prediction(target: Path, image: np.ndarray, pred: Prediction, spec: ModelSpec, *,
                     cutout: bool = False, save_prob: bool = False, background: tuple[int, ...] | None = None,
                     source=None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """Encode and atomically write one input's outputs (the files :func:`planned_outputs` names).

    Shared by the local engine's sink and the Ray engine's workers, so both write identical bytes.
    ``image`` may be the input policy's reduced working copy: the cut-out then re-reads ``source``
    at full size (masks are always at the original size).
    """
    array, palette = mask_image(pred, spec)
    atomic_write_bytes(target, encode_png(array, palette))
    if cutout or background is not None:
        original = _original_pixels(source, image, pred, max_pixels) if source is not None else image
        atomic_write_bytes(target.with_name(target.stem + "_cutout.png"),
                           encode_png(cutout_image(original, pred, spec, background)))
    if save_prob:
        write_npy(target.with_suffix(".npy"), pred.map.astype(np.float32))


def predict_files(model: str, inputs: list[str], out_dir: str | os.PathLike, options: PredictOptions | None = None, *,
                  progress: bool = True, on_progress: Callable[[int], None] | None = None, runtime=None,
                  log: Callable[[str], None] | None = None,
                  finder: Callable[[list, bool, Path], list] | None = None) -> PredictSummary:
    """Predict masks for files, folders and glob patterns and write them under ``out_dir``.

    Outputs per input, mirroring the inputs' folders under ``out_dir``: ``<stem>.png`` (saliency:
    8-bit map; binary: 0/255; semantic: palette PNG), ``<stem>_cutout.png`` with ``cutout`` or
    ``background``, ``<stem>.npy`` (float32 map) with ``save_prob``. ``out_dir/.segdeploy-manifest.json``
    records the settings and each file; a rerun with the same settings resumes, one with other
    settings raises UsageError (nothing touched) unless ``overwrite``. Every file is written
    atomically. Unreadable inputs are recorded in ``summary.failed`` with their reason. ``finder``
    replaces the search for inputs (see :func:`plan_predict_job`; a video run passes its images).

    ``options`` (:class:`~segdeploy.jobs.options.PredictOptions`) say which runtime to open and how
    to run; ``runtime`` is an already opened one to use instead.

    Raises:
        UsageError: before any work, for an output folder that is a file or an input folder, two
            inputs with one output path, an output that would replace an input, changed settings.
    """
    options = options or PredictOptions()
    spec = get_spec(model)
    plan = plan_predict_job(spec, inputs, out_dir, options, runtime=runtime, log=log, finder=finder)
    summary = plan.summary
    start = time.perf_counter()
    if not plan.todo:
        plan.release()
        summary.seconds = round(time.perf_counter() - start, 3)
        return summary
    if runtime is None:
        runtime = session_module.open_model_runtime(spec.name, options.runtime)
    warm_up(runtime, spec, min(options.batch_size, len(plan.todo)))
    summary.runtime = runtime_record(runtime)
    summary.selection = getattr(runtime, "selection", None)
    summary.weights = weights_of(runtime)
    plan.begin(summary.runtime)
    loop_start = time.perf_counter()
    summary.load_seconds = round(loop_start - start, 3)
    times = StageTimes()
    try:
        _write_masks(plan, runtime, options, times, progress=progress, on_progress=on_progress, log=log)
    finally:
        plan.release()  # saves the manifest, then lets the next run have the folder
        summary.stages = times.to_dict()
        end = time.perf_counter()
        summary.seconds = round(end - start, 3)
        processed = summary.written + len(summary.failed)
        # throughput of the streaming loop: opening the runtime (export, compile, probe) is reported
        # apart, in load_seconds, so that a short run is not judged by its start-up
        summary.images_per_s = round(summary.written / (end - loop_start), 3) \
            if end > loop_start and processed else None
    return summary


def _write_masks(plan, runtime, options: PredictOptions, times: StageTimes, *, progress: bool,
                 on_progress: Callable[[int], None] | None, log: Callable[[str], None] | None) -> None:
    """Stream the plan's inputs through ``runtime`` and write their outputs, recording each in the
    manifest (saved every 5 s, so that an interrupted run resumes close to where it stopped)."""
    spec, todo, policy = plan.spec, plan.todo, plan.policy

    def read(entry):
        return load_image(entry[0], policy, max_pixels=options.max_pixels)

    gate = PublishGate()

    def sink(entry, image, pred):
        source, target, _ = entry
        with gate.publishing():
            write_prediction(target, image, pred, spec, cutout=plan.cutout, save_prob=options.save_prob,
                             background=options.background, source=source, max_pixels=options.max_pixels)

    stream = StreamOptions(batch_size=min(options.batch_size, len(todo)), workers=options.workers,
                           max_side=policy.max_side or 0, memory_budget=options.memory_budget)
    bar = progress_bar(progress, len(todo), spec.name)
    last_save = time.monotonic()
    if log:
        log(f"predicting {len(todo)} image(s) with {spec.name} into {plan.out_dir}")
    loop_wall_ns = time.time_ns()
    try:
        with bar:
            task = bar.add_task("predict", total=len(todo)) if bar.enabled else None
            for outcome in stream_predictions(todo, read, runtime, spec, stream, sink=sink, times=times):
                source, _, key = outcome.item
                if getattr(outcome.error, "fatal", False):
                    raise outcome.error  # e.g. a full disk: every later input would fail the same way
                if outcome.stage == "infer" and is_out_of_memory(outcome.error):
                    # One image alone did not fit (a failed batch is retried image by image first):
                    # the fix is a smaller --max-size or another device, not a rerun of the rest.
                    raise InferenceError(f"out of memory running {source} ({outcome.error}); the "
                                         "run stopped — lower --max-size or --batch-size, or use another device")
                plan.record(source, key, None if outcome.ok else failure_reason(outcome.error))
                if task is not None:
                    bar.advance(task)
                if on_progress:
                    on_progress(1)
                if time.monotonic() - last_save > 5.0:
                    plan.save()
                    last_save = time.monotonic()
    except KeyboardInterrupt:
        plan.summary.interrupted = True
        gate.close()  # no output appears after this, so the record below is the whole truth
        plan.adopt_written(loop_wall_ns)
        raise


def warm_up(runtime, spec: ModelSpec, batch_size: int) -> None:
    """Compile and warm the runtime at the batch shape the loop will send, before the loop starts:
    OpenVINO compiles a static-shape model on its first call and each infer request allocates on its
    first use, seconds that belong to opening the model (``load_seconds``), not to the images.
    Models that take each photo at its own size are not warmed (their shapes are not known yet)."""
    if spec.preprocess.size is None:
        return
    h, w = spec.preprocess.size
    x = np.random.default_rng(0).standard_normal((batch_size, 3, int(h), int(w)), dtype=np.float32)
    try:
        # one call per infer request (a runtime hands them out in turn)
        for _ in range(calls_in_flight(runtime)):
            runtime.run(x)
    except Exception:  # noqa: BLE001 - the loop reports what fails, per input, with its reason
        pass


def predict_one(model: str, source: str, target: str, options: PredictOptions | None = None, *, stdin=None,
                stdout=None, log: Callable[[str], None] | None = None, runtime=None) -> dict[str, Any]:
    """One image to one file: ``source`` is a path or "-" (stdin), ``target`` a file path or "-" (stdout).

    The file is the mask, or the cut-out with ``cutout`` / ``background``; its format follows the
    target's suffix (PNG for stdout). Returns what was written (path, size, runtime).

    Raises:
        UsageError: the target exists (without ``overwrite``) or cannot hold the output.
        ImageReadError: the input cannot be read.
    """
    import sys

    options = options or PredictOptions()
    spec = get_spec(model)
    to_stdout = target == "-"
    suffix = ".png" if to_stdout else Path(target).suffix.lower()
    _check_one_output(source, target, options)
    if source == "-":
        data = (stdin or sys.stdin.buffer).read()
        if not data:
            raise ImageReadError("<stdin>", "no data on standard input")
        item: Any = data
    else:
        if os.path.isdir(source):
            raise UsageError(f"{source} is a folder; -o {target} names one file. Give -o a folder for many masks")
        item = source
        warning = check_memory(spec, InputPolicy.for_model(spec, options.max_size), [Path(source)],
                               options.max_pixels)
        if warning and log:
            log(f"warning: {warning}")
    if runtime is None:
        runtime = session_module.open_model_runtime(spec.name, options.runtime)
    session = Session(spec.name, max_size=options.max_size, max_pixels=options.max_pixels, runtime=runtime)
    pred = session.predict(item, return_maps=True)
    if options.writes_cutout:
        original = read_image(item, max_pixels=options.max_pixels)
        data_out = encode_output(cutout_image(original, pred, spec, options.background), None, suffix, target)
    else:
        array, palette = mask_image(pred, spec)
        data_out = encode_output(array, palette, suffix, target)
    if to_stdout:
        out = stdout or sys.stdout.buffer
        out.write(data_out)
        out.flush()
    else:
        atomic_write_bytes(target, data_out)
        if options.save_prob:
            write_npy(Path(target).with_suffix(".npy"), pred.map.astype(np.float32))
    return {"output": target, "bytes": len(data_out), "size": list(pred.mask.shape),
            "runtime": runtime_record(session.runtime),
            "selection": getattr(session.runtime, "selection", None), "weights": weights_of(session.runtime)}


def _check_one_output(source: str, target: str, options: PredictOptions) -> None:
    """UsageError, before the model opens, for an output file that cannot or may not be written."""
    if target == "-":
        if options.save_prob:
            raise UsageError("--save-prob needs an output file (-o FILE.png writes FILE.npy beside it), not -o -")
        return
    if source != "-":
        refuse_aliased_output(source, [target, Path(target).with_suffix(".npy")] if options.save_prob else [target])
    if Path(target).is_dir():
        raise UsageError(f"-o {target} is a folder; for one output file give a name like {target}/mask.png")
    if Path(target).exists() and not options.overwrite:
        raise UsageError(f"-o {target} exists; pass --overwrite to replace it")


def runtime_record(runtime) -> dict | None:
    """``runtime.describe()``, plus ``unverified`` (the gate's verdict) when the runtime failed its
    fidelity gate and runs anyway (``--allow-unverified``): recorded in the manifest and summary."""
    record = runtime.describe() if hasattr(runtime, "describe") else None
    if record is not None and getattr(runtime, "unverified", None):
        record = {**record, "unverified": runtime.unverified}
    return record


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


def progress_bar(enabled: bool, total: int, label: str):
    if not enabled or total == 0:
        return _NoBar()
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    bar = Progress(TextColumn(f"[bold]{label}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), transient=False)
    bar.enabled = True
    return bar


def write_summary_json(summary: PredictSummary | dict, path: str | os.PathLike) -> None:
    """Write the run summary (with the environment) as JSON; UsageError with one line on failure."""
    from segdeploy.core.environment import environment

    data = summary.to_dict() if hasattr(summary, "to_dict") else dict(summary)
    try:
        atomic_write_text(path, json.dumps({**data, "environment": environment()}, indent=2, default=str))
    except OSError as exc:
        raise UsageError(f"--json {path}: cannot write the summary ({exc.strerror or exc})") from None


def check_json_target(path: str | os.PathLike | None) -> None:
    """Fail before any work when --json names a folder or a place that cannot be written."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"--json {path} is a folder; give a file name such as {Path(path) / 'summary.json'}")
    parent = target.parent if str(target.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise UsageError(f"--json {path}: folder {parent} is not writable")
