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
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from segdeploy.bench.endtoend import image_files, run_end_to_end
from segdeploy.bench.memory import CudaCounters, device_limit
from segdeploy.bench.records import BatchResult, BenchReport
from segdeploy.bench.pure import MIN_BUFFERS, measure_batch


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


def _open(spec, backend: str, device: str, precision: str, weights, onnx_path, runtime_options):
    from segdeploy.backends import open_runtime

    return open_runtime(spec.name, backend=backend, device=device, precision=precision, weights=weights,
                        onnx_path=onnx_path, **(runtime_options or {}))


def _checked_plan(iters, duration, warmup: int, batch_sizes, num_buffers: int) -> tuple[int | None, list[int]]:
    """(timed calls or None for a duration, batch sizes) after checking the timing arguments."""
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
    sizes = [int(b) for b in batch_sizes]
    if not sizes or any(b < 1 for b in sizes):
        raise ValueError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    if num_buffers < MIN_BUFFERS:
        raise ValueError(f"num_buffers must be >= {MIN_BUFFERS}")
    return iters, sizes


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


def benchmark(
    model: Any,
    backend: str = "torch",
    precision: str = "fp32",
    batch_sizes: Sequence[int] = (1,),
    *,
    warmup: int = 10,
    iters: int | None = None,
    duration: float | None = None,
    input_size: tuple[int, int] | str | None = None,
    images: str | os.PathLike | None = None,
    device: str = "cpu",
    weights: str | os.PathLike | None = "random",
    seed: int = 0,
    num_buffers: int = MIN_BUFFERS,
    runtime: Any = None,
    onnx_path: str | os.PathLike | None = None,
    runtime_options: dict[str, Any] | None = None,
    limit_tflops: float | None = None,
    limit_images_per_s: float | None = None,
    count_flops: bool = True,
    e2e_workers: int | None = None,
    e2e_max_images: int | None = None,
    label: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Measure images/s and per-batch latency of ``model`` on one runtime over ``batch_sizes``.

    Args:
        model: registry name or ModelSpec.
        backend, precision, device, weights, onnx_path, runtime_options: passed to
            ``segdeploy.backends.open_runtime`` (ignored when ``runtime`` is given).
        batch_sizes: rows per ``run`` call to sweep.
        warmup: untimed ``run`` calls per batch size after ``Runtime.warmup(shape)``.
        iters: timed ``run`` calls per batch size (default 50 when ``duration`` is not given).
        duration: instead of ``iters``, time calls until this many seconds have passed (>= 1 call).
        input_size: (H, W) or "HxW" of the synthetic input; default the spec's input size.
        images: folder of images for an end-to-end pass per batch size (see module doc).
        seed: seed of the synthetic inputs.
        num_buffers: rotated input buffers per batch size (>= 3).
        runtime: an already opened runtime (``run``, ``warmup``, ``describe``); overrides opening one.
        limit_tflops: compute ceiling for ``share_of_limit``; default a measured ceiling from
            docs/performance.md §2 when the device is known there, else None.
        limit_images_per_s: the model's images/s limit (docs/performance.md §2) for
            ``share_of_image_limit``.
        count_flops: count FLOP per image with :func:`segdeploy.bench.flops.flops_for_model`.
        e2e_workers: threads for reading and for writing (default min(8, CPU count)).
        e2e_max_images: use only the first N images of ``images``.
        label: name of this configuration in tables and plots (default "backend precision").
        progress: called with a short message before each measurement.

    Returns:
        A :class:`BenchReport`; the best batch size (highest images/s) is marked.
    """
    from segdeploy.core.registry import get_spec

    spec = get_spec(model)
    iters, sizes = _checked_plan(iters, duration, warmup, batch_sizes, num_buffers)
    hw = _input_hw(spec, input_size)
    files = _e2e_files(images, e2e_max_images)
    say = progress or (lambda message: None)
    notes: list[str] = []

    cuda = CudaCounters(device) if str(device).startswith("cuda") else None
    if runtime is None:
        say(f"opening {backend} {precision} on {device}")
        runtime = _open(spec, backend, device, precision, weights, onnx_path, runtime_options)
    flops, flops_method = _flops(spec, hw, notes) if count_flops else (None, None)
    if limit_tflops is None:
        limit_tflops = _device_ceiling(runtime, cuda, precision, notes)

    timing = {"warmup": warmup, "iters": iters, "duration": duration, "num_buffers": num_buffers, "seed": seed}
    results: list[BatchResult] = []
    workers = e2e_workers or min(8, os.cpu_count() or 1)  # = pipeline.default_workers()
    for bs in sizes:
        say(f"batch {bs}: warm-up {warmup}, then {'%d calls' % iters if iters else '%.1f s' % duration}")
        result = measure_batch(runtime, bs, hw, **timing, cuda=cuda, flops_per_image=flops, limit_tflops=limit_tflops,
                               limit_images_per_s=limit_images_per_s, wanted=_decode_outputs(runtime, spec))
        if files:
            say(f"batch {bs}: end to end over {len(files)} images")
            result = _with_end_to_end(result, runtime, spec, files, workers)
        results.append(result)
    best_index = max(range(len(results)), key=lambda k: results[k].images_per_s)
    results[best_index] = replace(results[best_index], best=True)

    environment, env_note = _environment()
    notes += [env_note] if env_note else []
    describe = dict(runtime.describe()) if hasattr(runtime, "describe") else {}
    ran_backend, ran_precision = describe.get("backend", backend), describe.get("precision", precision)
    return BenchReport(
        model=spec.name, backend=str(ran_backend), precision=str(ran_precision), device=str(device), input_size=hw,
        label=label or f"{ran_backend} {ran_precision}", results=tuple(results),
        best_batch_size=results[best_index].batch_size, flops_per_image=flops, flops_method=flops_method,
        limit_tflops=limit_tflops, limit_images_per_s=limit_images_per_s,
        weights=_weights_record(runtime, describe, weights), runtime=describe,
        settings=_settings(sizes, timing, images, files, workers, cuda),
        notes=tuple(notes), environment=environment,
        created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _settings(sizes: list[int], timing: dict[str, Any], images, files, workers: int, cuda) -> dict[str, Any]:
    """How the numbers were taken (the report's ``settings``)."""
    return {
        "batch_sizes": sizes, "warmup": timing["warmup"], "iters": timing["iters"], "duration_s": timing["duration"],
        "num_buffers": timing["num_buffers"], "seed": timing["seed"],
        "input": f"seeded standard normal float32, {timing['num_buffers']} rotated buffers per batch size",
        "images": None if images is None else str(images), "e2e_images": len(files) if files else None,
        "e2e_workers": workers if files else None, "device_name": _cuda_name(cuda),
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


