"""Benchmark one model on one runtime over a batch sweep: pure inference and, optionally, end to end.

Pure mode (what a latency includes): one ``Runtime.run`` call on a host float32 NCHW batch, i.e.
host->device copy, the forward, device->host copy of every output, as the runtime contract defines
``run``. Inputs are seeded standard-normal buffers (never zeros), ``num_buffers`` (>= 3) of them per
batch size, used in rotation so that no cache holds "the" input. ``Runtime.warmup`` and ``warmup``
further untimed calls happen before the timed loop (compilation, autotuning, cuDNN benchmark).

On CUDA the harness synchronises the device around every timed call and times it with CUDA events
as well as the host clock; it resets and reads ``torch.cuda.max_memory_allocated`` per batch size
(only memory of PyTorch's allocator: ONNX Runtime's CUDA arena is seen in ``device_used_bytes``,
from ``cudaMemGetInfo``). If the runtime also offers the optional extension
``run_device(x: torch.Tensor) -> list[torch.Tensor]`` (input and outputs already on the device), a
second loop times the forward alone with CUDA events ("device-only" throughput, comparable to the
figures in docs/performance.md §3) and splits a batch into H2D / compute / D2H, the copies being timed on
pinned host buffers of the same byte sizes. When the runtime's ``staging`` can time its own copies
(segdeploy's torch backend: ``Staging.time_copies``), the split is read from CUDA events recorded
inside ``run`` around the copies it really does and the compute between them (``method="run-events"``,
preferred). Otherwise it is estimated: copies timed on pinned probe buffers, compute = median ``run``
time minus both copies (``method="copy-probe"``).

Pure mode asks ``run`` for only the outputs decoding reads (``outputs=``), as the pipeline does.

End-to-end mode (``images=DIR``): the streaming loop of :mod:`segdeploy.engine.pipeline` (read +
preprocess in a thread pool -> batch -> ``run`` -> decode + PNG write in a thread pool) writing masks
to a temporary folder; wall time from the first read to the last file closed; images/s is reported
beside the pure figure for the same batch size.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from segdeploy.bench.endtoend import image_files, run_end_to_end
from segdeploy.bench.memory import CudaCounters, device_limit
from segdeploy.bench.options import MIN_BUFFERS, BenchOptions, Roofline, TimingPlan
from segdeploy.bench.pure import measure_batch
from segdeploy.bench.records import BatchResult, BenchReport


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------


def _environment() -> tuple[dict[str, Any], str | None]:
    try:
        from segdeploy.core.environment import environment
    except ImportError as exc:
        import platform

        env = {
            "source": "fallback: segdeploy.core.environment is not available",
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "numpy": np.__version__,
            "argv": list(sys.argv),
        }
        return env, f"segdeploy.core.environment unavailable ({exc}); minimal environment recorded"
    return environment(), None


def _cuda_name(cuda: CudaCounters | None) -> str | None:
    if cuda is None:
        return None
    return cuda.torch.cuda.get_device_name(cuda.device)


def _decode_outputs(runtime: Any, spec: Any) -> tuple[int, ...] | None:
    """The outputs decoding reads, when ``runtime.run`` takes ``outputs=`` (else None = all)."""
    import inspect

    from segdeploy.backends.base import decode_outputs

    try:
        takes = "outputs" in inspect.signature(runtime.run).parameters
    except (TypeError, ValueError):
        takes = False
    return decode_outputs(spec) if takes else None


def _parse_size(size: Any) -> tuple[int, int]:
    if isinstance(size, str):
        parts = size.lower().replace("×", "x").split("x")
        if len(parts) == 1:
            parts = parts * 2
        size = parts
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"input size {size!r}: expected HxW, e.g. 320x320") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"input size {size!r} must be positive")
    return h, w


def _open(spec, options: BenchOptions):
    from segdeploy.backends import open_runtime

    return open_runtime(spec.name, backend=options.backend, device=options.device, precision=options.precision,
                        weights=options.weights, onnx_path=options.onnx_path, **(options.runtime_options or {}))


def _checked_plan(options: BenchOptions) -> tuple[TimingPlan, list[int]]:
    """(how each batch size is timed, batch sizes) after checking the timing options."""
    iters, duration, warmup = options.iters, options.duration, options.warmup
    if iters is not None and duration is not None:
        raise ValueError("give iters or duration, not both")
    if iters is None and duration is None:
        iters = 50
    if iters is not None and iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if duration is not None and not duration > 0:
        raise ValueError(f"duration must be > 0 seconds, got {duration}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    sizes = [int(b) for b in options.batch_sizes]
    if not sizes or any(b < 1 for b in sizes):
        raise ValueError(f"batch sizes must be positive integers, got {list(options.batch_sizes)}")
    if options.num_buffers < MIN_BUFFERS:
        raise ValueError(f"num_buffers must be >= {MIN_BUFFERS}")
    return TimingPlan(warmup, iters, duration, options.num_buffers, options.seed), sizes


def _input_hw(spec, input_size) -> tuple[int, int]:
    hw = _parse_size(input_size) if input_size is not None else tuple(spec.input_size)
    multiple = spec.preprocess.multiple_of
    if multiple > 1 and (hw[0] % multiple or hw[1] % multiple):
        raise ValueError(f"{spec.name} needs height and width divisible by {multiple}; got {hw[0]}x{hw[1]}")
    return hw


def _e2e_files(images, max_images: int | None) -> list[tuple[Path, Path]]:
    """The image files of the end-to-end pass (none without ``images``)."""
    if images is None:
        return []
    folder = Path(images)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: --images must be a folder of images")
    files = image_files(folder, max_images)
    if not files:
        raise ValueError(f"{folder}: no image files found")
    return files


def _flops(spec, hw: tuple[int, int], notes: list[str]) -> tuple[float | None, str | None]:
    try:
        from segdeploy.bench.flops import flops_for_model

        counted = flops_for_model(spec.name, hw)
        return counted.flops, counted.method
    except Exception as exc:  # noqa: BLE001 - FLOPs are informative; the benchmark goes on
        notes.append(f"FLOP count failed: {type(exc).__name__}: {exc}")
        return None, None


def _device_ceiling(runtime, cuda, precision: str, notes: list[str]) -> float | None:
    """The measured dense-matmul TFLOPS ceiling of the device at the precision run, when known."""
    said = runtime.describe() if hasattr(runtime, "describe") else {}
    found = device_limit(_cuda_name(cuda), str(said.get("precision", precision)))
    if found is None:
        return None
    notes.append(f"limit_tflops {found[0]} = dense matrix-product ceiling of {found[1]}")
    return found[0]


@dataclass(frozen=True)
class _Plan:
    """What a benchmark will do, every option checked before a runtime is opened."""

    spec: Any
    sizes: list[int]
    timing: TimingPlan
    hw: tuple[int, int]
    files: list[tuple[Path, Path]]
    workers: int
    cuda: CudaCounters | None


def benchmark(
    model: Any,
    options: BenchOptions | None = None,
    *,
    runtime: Any = None,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Measure images/s and per-batch latency of ``model`` on one runtime over ``options.batch_sizes``.

    Args:
        model: registry name or ModelSpec.
        options: what to open and time, and the limits to judge against (:class:`BenchOptions`);
            default ``BenchOptions()``.
        runtime: an already opened runtime (``run``, ``warmup``, ``describe``); overrides opening one
            from ``options.backend``, ``precision``, ``device``, ``weights``, ``onnx_path`` and
            ``runtime_options``.
        progress: called with a short message before each measurement.

    Returns:
        A :class:`BenchReport`; the best batch size (highest images/s) is marked.

    Raises:
        ValueError: an option out of range, or an input size the model cannot take.
        FileNotFoundError: ``options.images`` is not a folder.
    """
    options = options or BenchOptions()
    plan = _plan(model, options)
    say = progress or (lambda message: None)
    notes: list[str] = []
    if runtime is None:
        say(f"opening {options.backend} {options.precision} on {options.device}")
        runtime = _open(plan.spec, options)
    roofline, flops_method = _roofline(plan, runtime, options, notes)
    results = _sweep(plan, runtime, roofline, say)
    return _report(plan, runtime, options, results, roofline, flops_method, notes)


def _plan(model: Any, options: BenchOptions) -> _Plan:
    """Check the options against the model before anything is opened."""
    from segdeploy.core.registry import get_spec

    spec = get_spec(model)
    timing, sizes = _checked_plan(options)
    hw = _input_hw(spec, options.input_size)
    files = _e2e_files(options.images, options.e2e_max_images)
    cuda = CudaCounters(options.device) if str(options.device).startswith("cuda") else None
    workers = options.e2e_workers or min(8, os.cpu_count() or 1)  # = pipeline.default_workers()
    return _Plan(spec, sizes, timing, hw, files, workers, cuda)


def _roofline(plan: _Plan, runtime, options: BenchOptions, notes: list[str]) -> tuple[Roofline, str | None]:
    """(FLOP per image and the limits to judge against, how the FLOPs were counted)."""
    flops, flops_method = _flops(plan.spec, plan.hw, notes) if options.count_flops else (None, None)
    limit_tflops = options.limit_tflops
    if limit_tflops is None:
        limit_tflops = _device_ceiling(runtime, plan.cuda, options.precision, notes)
    return Roofline(flops, limit_tflops, options.limit_images_per_s), flops_method


def _sweep(plan: _Plan, runtime, roofline: Roofline, say: Callable[[str], None]) -> list[BatchResult]:
    """One measurement per batch size (pure, then end to end when there are images), best marked."""
    timing = plan.timing
    results: list[BatchResult] = []
    for bs in plan.sizes:
        say(f"batch {bs}: warm-up {timing.warmup}, then "
            f"{'%d calls' % timing.iters if timing.iters else '%.1f s' % timing.duration}")
        result = measure_batch(runtime, bs, plan.hw, timing, cuda=plan.cuda, roofline=roofline,
                               wanted=_decode_outputs(runtime, plan.spec))
        if plan.files:
            say(f"batch {bs}: end to end over {len(plan.files)} images")
            result = _with_end_to_end(result, runtime, plan.spec, plan.files, plan.workers)
        results.append(result)
    best_index = max(range(len(results)), key=lambda k: results[k].images_per_s)
    results[best_index] = replace(results[best_index], best=True)
    return results


def _report(plan: _Plan, runtime, options: BenchOptions, results: list[BatchResult], roofline: Roofline,
            flops_method: str | None, notes: list[str]) -> BenchReport:
    """The report of a finished sweep: what ran, the results and how they were taken."""
    environment, env_note = _environment()
    notes += [env_note] if env_note else []
    describe = dict(runtime.describe()) if hasattr(runtime, "describe") else {}
    ran_backend = describe.get("backend", options.backend)
    ran_precision = describe.get("precision", options.precision)
    best = next(r for r in results if r.best)
    return BenchReport(
        model=plan.spec.name, backend=str(ran_backend), precision=str(ran_precision), device=str(options.device),
        input_size=plan.hw, label=options.label or f"{ran_backend} {ran_precision}", results=tuple(results),
        best_batch_size=best.batch_size, flops_per_image=roofline.flops_per_image, flops_method=flops_method,
        limit_tflops=roofline.limit_tflops, limit_images_per_s=roofline.limit_images_per_s,
        weights=_weights_record(runtime, describe, options.weights), runtime=describe,
        settings=_settings(plan, options.images),
        notes=tuple(notes), environment=environment,
        created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _settings(plan: _Plan, images) -> dict[str, Any]:
    """How the numbers were taken (the report's ``settings``)."""
    timing, files, cuda = plan.timing, plan.files, plan.cuda
    return {
        "batch_sizes": plan.sizes, "warmup": timing.warmup, "iters": timing.iters, "duration_s": timing.duration,
        "num_buffers": timing.num_buffers, "seed": timing.seed,
        "input": f"seeded standard normal float32, {timing.num_buffers} rotated buffers per batch size",
        "images": None if images is None else str(images), "e2e_images": len(files) if files else None,
        "e2e_workers": plan.workers if files else None, "device_name": _cuda_name(cuda),
        "timer": "host perf_counter around each call" + (", CUDA synchronise + CUDA events" if cuda else ""),
        "percentiles": "linear interpolation between closest ranks (Hyndman & Fan type 7)",
    }


def _with_end_to_end(result: BatchResult, runtime, spec, files, workers: int) -> BatchResult:
    """``result`` with the end-to-end pass over ``files`` at its batch size."""
    with tempfile.TemporaryDirectory(prefix="segdeploy-bench-") as tmp:
        e2e = run_end_to_end(runtime, spec, files, result.batch_size, Path(tmp), workers=workers,
                             pure_images_per_s=result.images_per_s)
    return replace(result, e2e=e2e)


def _weights_record(runtime, describe: dict[str, Any], weights) -> Any:
    """What ran: the module's weights record, else what the runtime says, else the argument."""
    record = getattr(getattr(runtime, "model", None), "segdeploy_weights", None)
    info: Any = record.to_dict() if hasattr(record, "to_dict") else describe.get("weights", weights)
    return str(info) if isinstance(info, os.PathLike) else info


