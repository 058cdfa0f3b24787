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
figures in PERFORMANCE.md §3) and splits a batch into H2D / compute / D2H, the copies being timed on
pinned host buffers of the same byte sizes. Without it the split is estimated: copies timed the
same way, compute = median ``run`` time minus both copies (``method="copy-probe"``).

End-to-end mode (``images=DIR``): the streaming loop of :mod:`segdeploy.engine.pipeline` (read +
preprocess in a thread pool -> batch -> ``run`` -> decode + PNG write in a thread pool) writing masks
to a temporary folder; wall time from the first read to the last file closed; images/s is reported
beside the pure figure for the same batch size.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from segdeploy.bench.timing import LatencyStats, achieved_tflops, now, percentile, share_of_limit, throughput

MIB = 1 << 20
MIN_BUFFERS = 3

#: Dense matrix-product ceilings measured on one H100 80GB HBM3 (PERFORMANCE.md §2), TFLOP/s.
MEASURED_PEAK_TFLOPS = {("H100", "fp16"): 810.0, ("H100", "bf16"): 804.0}

PURE_INCLUDES = (
    "one Runtime.run call: host->device copy, forward, device->host copy of all outputs "
    "(on CPU: the forward and output conversion); seeded standard-normal inputs in rotating buffers"
)
E2E_INCLUDES = (
    "wall time from the first file read to the last PNG closed: image decode (thread pool), "
    "preprocess, batching, Runtime.run, decode to the original size, PNG encode + atomic write "
    "(thread pool); files may be served from the OS page cache after the first pass"
)


# ----------------------------------------------------------------------------------------------
# Result records
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceSplit:
    """Median time of one batch's host->device copy, forward and device->host copy, in ms.

    ``method``: "run_device" (forward timed with CUDA events on device-resident input) or
    "copy-probe" (forward = median run time minus the probed copies; an estimate).
    """

    h2d_ms: float
    compute_ms: float
    d2h_ms: float
    input_bytes: int
    output_bytes: int
    method: str


@dataclass(frozen=True)
class DeviceOnly:
    """Forward alone on device-resident inputs (``Runtime.run_device``), timed with CUDA events.

    ``images_per_s`` = images / ``wall_s`` (calls queued back to back, one synchronise at the end);
    ``latency`` = GPU time between each call's CUDA events; ``gpu_seconds`` = their sum.
    """

    images: int
    wall_s: float
    gpu_seconds: float
    images_per_s: float
    latency: LatencyStats
    achieved_tflops: float | None = None
    share_of_limit: float | None = None
    share_of_image_limit: float | None = None


@dataclass(frozen=True)
class EndToEnd:
    """One timed end-to-end pass over an image folder at one batch size.

    ``images`` are the rows the runtime actually ran; ``masks_written`` the PNG files written;
    ``failed`` the unreadable inputs (skipped, not counted); ``stage_seconds`` are summed over
    threads (they overlap, so they do not add up to ``wall_s``).
    """

    images: int
    batches: int
    wall_s: float
    images_per_s: float
    ratio_to_pure: float | None
    masks_written: int
    workers: int
    failed: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    includes: str = E2E_INCLUDES


@dataclass(frozen=True)
class BatchResult:
    """Pure-inference measurement at one batch size.

    Attributes:
        batch_size: rows per ``run`` call.
        images: images actually processed in the timed loop (counted from the outputs' batch axis).
        batches: timed ``run`` calls (= ``latency.count``).
        wall_s: wall time of the whole timed loop, seconds.
        images_per_s: ``images / wall_s``.
        latency: per-batch latency statistics (host clock; on CUDA with a synchronise around each
            call).
        ms_per_image: ``latency.median_ms / batch_size``.
        achieved_tflops: FLOP per image x images/s / 1e12 (None when FLOPs are unknown).
        share_of_limit: ``achieved_tflops / limit_tflops``.
        share_of_image_limit: ``images_per_s / limit_images_per_s``.
        host_peak_rss_bytes: peak resident set size (VmHWM) of this process while this batch size
            ran, when the kernel lets it be reset per batch size (``host_peak_rss_scope`` =
            "batch"); otherwise the peak of the process so far ("process").
        cuda_latency: per-batch latency by CUDA events around each call (CUDA only).
        device_peak_bytes: ``torch.cuda.max_memory_allocated`` over warm-up and timed loop.
        device_reserved_bytes: ``torch.cuda.max_memory_reserved`` over the same.
        device_used_bytes: device memory in use (total - free) after the loop, every allocator.
        device_only: forward-only measurement when the runtime has ``run_device``.
        split: H2D / compute / D2H split (CUDA only).
        e2e: end-to-end pass (``images=DIR``).
        best: this batch size gave the highest images/s of the sweep.
    """

    batch_size: int
    images: int
    batches: int
    wall_s: float
    images_per_s: float
    latency: LatencyStats
    ms_per_image: float
    achieved_tflops: float | None = None
    share_of_limit: float | None = None
    share_of_image_limit: float | None = None
    host_peak_rss_bytes: int | None = None
    host_peak_rss_scope: str | None = None
    cuda_latency: LatencyStats | None = None
    device_peak_bytes: int | None = None
    device_reserved_bytes: int | None = None
    device_used_bytes: int | None = None
    device_only: DeviceOnly | None = None
    split: DeviceSplit | None = None
    e2e: EndToEnd | None = None
    best: bool = False


@dataclass(frozen=True)
class BenchReport:
    """Everything one ``benchmark`` call measured; ``to_dict`` is the JSON source of truth."""

    model: str
    backend: str
    precision: str
    device: str
    input_size: tuple[int, int]
    label: str
    results: tuple[BatchResult, ...]
    best_batch_size: int | None
    flops_per_image: int | None = None
    flops_method: str | None = None
    limit_tflops: float | None = None
    limit_images_per_s: float | None = None
    weights: dict[str, Any] | str | None = None
    runtime: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    pure_includes: str = PURE_INCLUDES
    notes: tuple[str, ...] = ()
    environment: dict[str, Any] = field(default_factory=dict)
    created_utc: str = ""

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_size"] = list(self.input_size)
        data["notes"] = list(self.notes)
        data["results"] = [_batch_to_dict(r) for r in self.results]
        data["schema"] = "segdeploy.bench/1"
        return data

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=_json_default)

    def save_json(self, path: str | os.PathLike) -> Path:
        from segdeploy.engine.writers import atomic_write_text

        return atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BenchReport":
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["input_size"] = tuple(kwargs["input_size"])
        kwargs["notes"] = tuple(kwargs.get("notes", ()))
        kwargs["results"] = tuple(_batch_from_dict(r) for r in data["results"])
        return cls(**kwargs)

    @property
    def best(self) -> BatchResult | None:
        return next((r for r in self.results if r.best), None)


def load_report(path: str | os.PathLike) -> BenchReport:
    """Read a report written by :meth:`BenchReport.save_json`."""
    try:
        data = json.loads(Path(path).read_text())
        return BenchReport.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a segdeploy bench report ({exc})") from exc


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def _batch_to_dict(result: BatchResult) -> dict[str, Any]:
    data = asdict(result)
    # Derived units printed by the CLI, stored too so that every printed number is in the JSON.
    for key in ("host_peak_rss_bytes", "device_peak_bytes", "device_reserved_bytes", "device_used_bytes"):
        value = data[key]
        data[key.replace("_bytes", "_mib")] = None if value is None else value / MIB
    return data


def _batch_from_dict(data: dict[str, Any]) -> BatchResult:
    known = {f.name for f in fields(BatchResult)}
    kwargs = {k: v for k, v in data.items() if k in known}
    kwargs["latency"] = LatencyStats.from_dict(kwargs["latency"])
    if kwargs.get("cuda_latency") is not None:
        kwargs["cuda_latency"] = LatencyStats.from_dict(kwargs["cuda_latency"])
    if kwargs.get("device_only") is not None:
        only = dict(kwargs["device_only"])
        only["latency"] = LatencyStats.from_dict(only["latency"])
        kwargs["device_only"] = DeviceOnly(**only)
    if kwargs.get("split") is not None:
        kwargs["split"] = DeviceSplit(**kwargs["split"])
    if kwargs.get("e2e") is not None:
        kwargs["e2e"] = EndToEnd(**kwargs["e2e"])
    return BatchResult(**kwargs)


# ----------------------------------------------------------------------------------------------
# Host and device probes
# ----------------------------------------------------------------------------------------------


def _read_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_host_peak() -> bool:
    """Reset this process's peak RSS (Linux >= 4.0: write "5" to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def host_peak_rss_bytes() -> int | None:
    """Peak resident set size of this process in bytes (VmHWM; else getrusage ru_maxrss)."""
    kib = _read_status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    try:
        import resource

        # ru_maxrss is KiB on Linux, bytes on macOS.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)
    except (ImportError, OSError):
        return None


class _Cuda:
    """The CUDA side of the harness: synchronise, memory counters, copy probes, events."""

    def __init__(self, device: str):
        import torch

        if not torch.cuda.is_available():
            raise _unavailable(f"device {device!r} requested but torch sees no CUDA device")
        self.torch = torch
        self.device = torch.device(device)
        if self.device.index is not None:
            torch.cuda.set_device(self.device)

    def sync(self) -> None:
        self.torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        self.torch.cuda.reset_peak_memory_stats(self.device)

    def peaks(self) -> tuple[int, int, int]:
        free, total = self.torch.cuda.mem_get_info(self.device)
        return (
            int(self.torch.cuda.max_memory_allocated(self.device)),
            int(self.torch.cuda.max_memory_reserved(self.device)),
            int(total - free),
        )

    def timer(self):
        from segdeploy.bench.timing import CudaEventTimer

        return CudaEventTimer()

    def copy_ms(self, nbytes: int, direction: str, reps: int = 10) -> float:
        """Median ms of copying ``nbytes`` between pinned host memory and the device."""
        torch = self.torch
        if nbytes <= 0:
            return 0.0
        host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        dev = torch.empty(nbytes, dtype=torch.uint8, device=self.device)
        samples = []
        for _ in range(reps + 1):
            timer = self.timer()
            timer.start()
            if direction == "h2d":
                dev.copy_(host, non_blocking=True)
            else:
                host.copy_(dev, non_blocking=True)
            timer.stop()
            samples.append(timer.elapsed_s())
        del host, dev
        return 1e3 * percentile(samples[1:], 0.5)

    def to_device(self, array: np.ndarray):
        return self.torch.from_numpy(array).to(self.device)


def _unavailable(message: str) -> Exception:
    try:
        from segdeploy.backends import RuntimeUnavailable

        return RuntimeUnavailable(message)
    except Exception:  # noqa: BLE001 - runtimes package not importable: plain error
        return RuntimeError(message)


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def make_inputs(
    batch_size: int, input_size: tuple[int, int], *, num_buffers: int = MIN_BUFFERS, seed: int = 0,
    channels: int = 3,
) -> list[np.ndarray]:
    """``num_buffers`` distinct float32 NCHW batches drawn from a seeded standard normal."""
    if num_buffers < MIN_BUFFERS:
        raise ValueError(f"num_buffers must be >= {MIN_BUFFERS} so caches don't flatter the result")
    rng = np.random.default_rng([seed, batch_size])
    shape = (batch_size, channels, *input_size)
    return [rng.standard_normal(shape, dtype=np.float32) for _ in range(num_buffers)]


def _count_rows(outputs: Sequence[np.ndarray], expected: int) -> int:
    if not outputs:
        raise RuntimeError("the runtime returned no outputs")
    rows = int(np.shape(outputs[0])[0])
    if rows != expected:
        raise RuntimeError(f"the runtime returned {rows} rows for a batch of {expected}")
    return rows


# ----------------------------------------------------------------------------------------------
# Pure inference
# ----------------------------------------------------------------------------------------------


def _timed_loop(
    call: Callable[[int], int], *, iters: int | None, duration: float | None,
    cuda: _Cuda | None,
) -> tuple[list[float], list[float], int, float]:
    """Run ``call(i)`` (returns rows processed) until ``iters`` calls or ``duration`` seconds.

    Returns (host latencies s, CUDA-event latencies s, images, wall seconds).
    """
    host: list[float] = []
    events: list[float] = []
    images = 0
    if cuda is not None:
        cuda.sync()
    start = now()
    i = 0
    while True:
        if iters is not None and i >= iters:
            break
        if duration is not None and i > 0 and now() - start >= duration:
            break
        if cuda is not None:
            timer = cuda.timer()
            t0 = now()
            timer.start()
            images += call(i)
            timer.stop()
            cuda.sync()
            t1 = now()
            events.append(timer.elapsed_s())
        else:
            t0 = now()
            images += call(i)
            t1 = now()
        host.append(t1 - t0)
        i += 1
    wall = now() - start
    return host, events, images, wall


def _device_only(
    runtime: Any, buffers: list[np.ndarray], cuda: _Cuda, iters: int | None, duration: float | None,
    warmup: int,
) -> DeviceOnly:
    """Forward-only loop on device-resident inputs through ``runtime.run_device``.

    Calls are queued back to back without a synchronise in between (as a serving loop would);
    each call is bracketed by CUDA events, read after the final synchronise. Throughput is images
    over the loop's wall time; a latency is the GPU time between a call's two events.
    """
    dev_buffers = [cuda.to_device(b) for b in buffers]
    for i in range(warmup):
        runtime.run_device(dev_buffers[i % len(dev_buffers)])
    cuda.sync()
    timers = []
    images = 0
    begin = now()
    i = 0
    while (iters is None or i < iters) and not (duration is not None and i > 0 and now() - begin >= duration):
        timer = cuda.timer()
        timer.start()
        outputs = runtime.run_device(dev_buffers[i % len(dev_buffers)])
        timer.stop()
        timers.append(timer)
        images += int(outputs[0].shape[0])
        i += 1
    cuda.sync()
    wall = now() - begin
    samples = [t.elapsed_s() for t in timers]
    return DeviceOnly(
        images=images,
        wall_s=wall,
        gpu_seconds=float(sum(samples)),
        images_per_s=throughput(images, wall),
        latency=LatencyStats.from_seconds(samples),
    )


def _measure_batch(
    runtime: Any, batch_size: int, input_size: tuple[int, int], *, warmup: int, iters: int | None,
    duration: float | None, num_buffers: int, seed: int, cuda: _Cuda | None,
    flops_per_image: int | None, limit_tflops: float | None, limit_images_per_s: float | None,
) -> BatchResult:
    buffers = make_inputs(batch_size, input_size, num_buffers=num_buffers, seed=seed)
    rss_scope = "batch" if reset_host_peak() else "process"
    if cuda is not None:
        cuda.sync()
        cuda.reset_peak()
    runtime.warmup(buffers[0].shape)
    outputs: list[np.ndarray] = []
    for i in range(warmup):
        outputs = runtime.run(buffers[i % num_buffers])
        _count_rows(outputs, batch_size)
    if cuda is not None and not outputs:  # the D2H copy probe needs the outputs' sizes
        outputs = runtime.run(buffers[0])

    def call(i: int) -> int:
        return _count_rows(runtime.run(buffers[i % num_buffers]), batch_size)

    host, events, images, wall = _timed_loop(call, iters=iters, duration=duration, cuda=cuda)
    latency = LatencyStats.from_seconds(host)
    ips = throughput(images, wall)
    tflops = achieved_tflops(flops_per_image, ips)
    extra: dict[str, Any] = {}
    if cuda is not None:
        extra["cuda_latency"] = LatencyStats.from_seconds(events)
        input_bytes = int(buffers[0].nbytes)
        output_bytes = int(sum(np.asarray(o).nbytes for o in outputs))
        h2d = cuda.copy_ms(input_bytes, "h2d")
        d2h = cuda.copy_ms(output_bytes, "d2h")
        if callable(getattr(runtime, "run_device", None)):
            only = _device_only(runtime, buffers, cuda, iters, duration, warmup=max(1, min(warmup, 3)))
            only_tflops = achieved_tflops(flops_per_image, only.images_per_s)
            only = replace(
                only, achieved_tflops=only_tflops,
                share_of_limit=share_of_limit(only_tflops, limit_tflops),
                share_of_image_limit=share_of_limit(only.images_per_s, limit_images_per_s),
            )
            extra["device_only"] = only
            extra["split"] = DeviceSplit(h2d, only.latency.median_ms, d2h, input_bytes, output_bytes, "run_device")
        else:
            compute = max(0.0, extra["cuda_latency"].median_ms - h2d - d2h)
            extra["split"] = DeviceSplit(h2d, compute, d2h, input_bytes, output_bytes, "copy-probe")
        cuda.sync()
        peak, reserved, used = cuda.peaks()
        extra.update(device_peak_bytes=peak, device_reserved_bytes=reserved, device_used_bytes=used)
    return BatchResult(
        batch_size=batch_size,
        images=images,
        batches=latency.count,
        wall_s=wall,
        images_per_s=ips,
        latency=latency,
        ms_per_image=latency.median_ms / batch_size,
        achieved_tflops=tflops,
        share_of_limit=share_of_limit(tflops, limit_tflops),
        share_of_image_limit=share_of_limit(ips, limit_images_per_s),
        host_peak_rss_bytes=host_peak_rss_bytes(),
        host_peak_rss_scope=rss_scope,
        **extra,
    )


# ----------------------------------------------------------------------------------------------
# End to end
# ----------------------------------------------------------------------------------------------


def _image_files(folder: Path, limit: int | None) -> list[tuple[Path, Path]]:
    from segdeploy.engine.images import find_images

    files = find_images([folder])
    return files[:limit] if limit is not None else files


def run_end_to_end(
    runtime: Any, spec: Any, files: Sequence[tuple[Path, Path]], batch_size: int, out_dir: Path, *,
    workers: int, pure_images_per_s: float | None = None,
) -> EndToEnd:
    """One timed pass of :func:`segdeploy.engine.pipeline.stream_predictions` writing PNG masks.

    ``files`` are (path, path relative to the folder) pairs; masks go to ``out_dir/<rel>.png``.
    The first batch is run once untimed beforehand (warm-up for the real input shape, thread
    pools started). Images are counted from the batches the runtime actually ran (a partial last
    batch, or batches closed early because consecutive inputs differ in size, count what they held).
    """
    from segdeploy.engine.images import read_image
    from segdeploy.engine.writers import write_png
    from segdeploy.engine.pipeline import StageTimes, stream_predictions

    if not files:
        raise ValueError("no images to run end to end")

    def read(item: tuple[Path, Path]) -> np.ndarray:
        return read_image(item[0])

    def sink(item: tuple[Path, Path], image: np.ndarray, prediction: Any) -> int:
        write_png(out_dir / item[1].with_suffix(".png"), np.asarray(prediction.mask))
        return 1

    warm = list(stream_predictions(files[:batch_size], read, runtime, spec, batch_size=batch_size,
                                   workers=workers))
    for outcome in warm:
        if not outcome.ok:
            raise RuntimeError(f"{outcome.item[0]}: end-to-end warm-up failed: {outcome.error}")
    times = StageTimes()
    written = 0
    failures: list[str] = []
    start = now()
    for outcome in stream_predictions(files, read, runtime, spec, batch_size=batch_size, workers=workers,
                                      sink=sink, times=times):
        if outcome.ok:
            written += int(outcome.sink_result or 0)
        else:
            failures.append(f"{outcome.item[0]}: {outcome.error}")
    wall = now() - start
    images = int(sum(times.batch_sizes))
    if images == 0:
        raise RuntimeError("end to end: no image went through the runtime; " + "; ".join(failures[:3]))
    ips = throughput(images, wall)
    return EndToEnd(
        images=images,
        batches=times.batches,
        wall_s=wall,
        images_per_s=ips,
        ratio_to_pure=None if not pure_images_per_s else ips / pure_images_per_s,
        masks_written=written,
        workers=workers,
        failed=len(failures),
        stage_seconds={"read_preprocess": times.read, "infer": times.infer, "decode_write": times.decode},
    )


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


def _cuda_name(cuda: _Cuda | None) -> str | None:
    if cuda is None:
        return None
    return cuda.torch.cuda.get_device_name(cuda.device)


def _default_limit(device_name: str | None, precision: str) -> float | None:
    if not device_name:
        return None
    for (key, prec), value in MEASURED_PEAK_TFLOPS.items():
        if key in device_name and prec == precision:
            return value
    return None


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
            PERFORMANCE.md §2 when the device is known there, else None.
        limit_images_per_s: the model's images/s limit (PERFORMANCE.md §2) for
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
    hw = _parse_size(input_size) if input_size is not None else tuple(spec.input_size)
    multiple = spec.preprocess.multiple_of
    if multiple > 1 and (hw[0] % multiple or hw[1] % multiple):
        raise ValueError(f"{spec.name} needs height and width divisible by {multiple}; got {hw[0]}x{hw[1]}")
    files: list[tuple[Path, Path]] = []
    if images is not None:
        folder = Path(images)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: --images must be a folder of images")
        files = _image_files(folder, e2e_max_images)
        if not files:
            raise ValueError(f"{folder}: no image files found")
    say = progress or (lambda message: None)
    notes: list[str] = []

    cuda = _Cuda(device) if str(device).startswith("cuda") else None
    if runtime is None:
        from segdeploy.backends import open_runtime

        say(f"opening {backend} {precision} on {device}")
        runtime = open_runtime(spec.name, backend=backend, device=device, precision=precision,
                               weights=weights, onnx_path=onnx_path, **(runtime_options or {}))
    flops = flops_method = None
    if count_flops:
        try:
            from segdeploy.bench.flops import flops_for_model

            counted = flops_for_model(spec.name, hw)
            flops, flops_method = counted.flops, counted.method
        except Exception as exc:  # noqa: BLE001 - FLOPs are informative; the benchmark goes on
            notes.append(f"FLOP count failed: {type(exc).__name__}: {exc}")
    if limit_tflops is None:
        said = runtime.describe() if hasattr(runtime, "describe") else {}
        limit_tflops = _default_limit(_cuda_name(cuda), str(said.get("precision", precision)))
        if limit_tflops is not None:
            notes.append(f"limit_tflops {limit_tflops} = measured dense-matmul ceiling (PERFORMANCE.md §2)")

    results: list[BatchResult] = []
    workers = e2e_workers or min(8, os.cpu_count() or 1)  # = pipeline.default_workers()
    for bs in sizes:
        say(f"batch {bs}: warm-up {warmup}, then {'%d calls' % iters if iters else '%.1f s' % duration}")
        result = _measure_batch(
            runtime, bs, hw, warmup=warmup, iters=iters, duration=duration, num_buffers=num_buffers,
            seed=seed, cuda=cuda, flops_per_image=flops, limit_tflops=limit_tflops,
            limit_images_per_s=limit_images_per_s,
        )
        if files:
            say(f"batch {bs}: end to end over {len(files)} images")
            with tempfile.TemporaryDirectory(prefix="segdeploy-bench-") as tmp:
                e2e = run_end_to_end(runtime, spec, files, bs, Path(tmp), workers=workers,
                                     pure_images_per_s=result.images_per_s)
            result = replace(result, e2e=e2e)
        results.append(result)
    best_index = max(range(len(results)), key=lambda k: results[k].images_per_s)
    results[best_index] = replace(results[best_index], best=True)

    environment, env_note = _environment()
    if env_note:
        notes.append(env_note)
    describe = dict(runtime.describe()) if hasattr(runtime, "describe") else {}
    record = getattr(getattr(runtime, "model", None), "segdeploy_weights", None)
    weights_info: Any = record.to_dict() if hasattr(record, "to_dict") else describe.get("weights", weights)
    if isinstance(weights_info, os.PathLike):
        weights_info = str(weights_info)
    return BenchReport(
        model=spec.name,
        backend=str(describe.get("backend", backend)),
        precision=str(describe.get("precision", precision)),
        device=str(device),
        input_size=hw,
        label=label or f"{describe.get('backend', backend)} {describe.get('precision', precision)}",
        results=tuple(results),
        best_batch_size=results[best_index].batch_size,
        flops_per_image=flops,
        flops_method=flops_method,
        limit_tflops=limit_tflops,
        limit_images_per_s=limit_images_per_s,
        weights=weights_info,
        runtime=describe,
        settings={
            "batch_sizes": sizes,
            "warmup": warmup,
            "iters": iters,
            "duration_s": duration,
            "num_buffers": num_buffers,
            "seed": seed,
            "input": f"seeded standard normal float32, {num_buffers} rotated buffers per batch size",
            "images": None if images is None else str(images),
            "e2e_images": len(files) if files else None,
            "e2e_workers": workers if files else None,
            "device_name": _cuda_name(cuda),
            "timer": "host perf_counter around each call, CUDA synchronise + CUDA events" if cuda
            else "host perf_counter around each call",
            "percentiles": "linear interpolation between closest ranks (Hyndman & Fan type 7)",
        },
        notes=tuple(notes),
        environment=environment,
        created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


# ----------------------------------------------------------------------------------------------
# Renderings (of the JSON record; several reports can be rendered together)
# ----------------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "label", "model", "backend", "precision", "device", "input_h", "input_w", "batch_size", "images",
    "batches", "wall_s", "images_per_s", "latency_min_ms", "latency_median_ms", "latency_mean_ms",
    "latency_p90_ms", "latency_p99_ms", "latency_max_ms", "ms_per_image", "flops_per_image",
    "achieved_tflops", "share_of_limit", "share_of_image_limit", "host_peak_rss_bytes",
    "device_peak_bytes", "device_only_images_per_s", "h2d_ms", "compute_ms", "d2h_ms", "split_method",
    "e2e_images", "e2e_images_per_s", "e2e_ratio_to_pure", "best",
)


def _as_list(reports: BenchReport | Sequence[BenchReport]) -> list[BenchReport]:
    return [reports] if isinstance(reports, BenchReport) else list(reports)


def _rows(report: BenchReport):
    for r in report.results:
        lat = r.latency
        yield {
            "label": report.label, "model": report.model, "backend": report.backend,
            "precision": report.precision, "device": report.device, "input_h": report.input_size[0],
            "input_w": report.input_size[1], "batch_size": r.batch_size, "images": r.images,
            "batches": r.batches, "wall_s": r.wall_s, "images_per_s": r.images_per_s,
            "latency_min_ms": lat.min_ms, "latency_median_ms": lat.median_ms, "latency_mean_ms": lat.mean_ms,
            "latency_p90_ms": lat.p90_ms, "latency_p99_ms": lat.p99_ms, "latency_max_ms": lat.max_ms,
            "ms_per_image": r.ms_per_image, "flops_per_image": report.flops_per_image,
            "achieved_tflops": r.achieved_tflops, "share_of_limit": r.share_of_limit,
            "share_of_image_limit": r.share_of_image_limit, "host_peak_rss_bytes": r.host_peak_rss_bytes,
            "device_peak_bytes": r.device_peak_bytes,
            "device_only_images_per_s": r.device_only.images_per_s if r.device_only else None,
            "h2d_ms": r.split.h2d_ms if r.split else None,
            "compute_ms": r.split.compute_ms if r.split else None,
            "d2h_ms": r.split.d2h_ms if r.split else None,
            "split_method": r.split.method if r.split else None,
            "e2e_images": r.e2e.images if r.e2e else None,
            "e2e_images_per_s": r.e2e.images_per_s if r.e2e else None,
            "e2e_ratio_to_pure": r.e2e.ratio_to_pure if r.e2e else None,
            "best": r.best,
        }


def render_csv(reports: BenchReport | Sequence[BenchReport]) -> str:
    """One CSV row per (report, batch size), columns :data:`CSV_COLUMNS`; empty cell = not measured."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for report in _as_list(reports):
        for row in _rows(report):
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 100:
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.1f}"
    if 0 < abs(value) < 1:  # keep significant digits of sub-millisecond latencies
        return f"{value:.{digits + 1}g}"
    return f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def table_rows(report: BenchReport) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of the per-batch table (shared by Markdown and the CLI)."""
    header = ["batch", "images", "batches", "img/s", "median ms", "p90 ms", "p99 ms", "ms/img", "TFLOP/s",
              "% limit", "host peak MiB"]
    has_gpu = any(r.device_peak_bytes is not None for r in report.results)
    has_only = any(r.device_only is not None for r in report.results)
    has_e2e = any(r.e2e is not None for r in report.results)
    if has_gpu:
        header += ["device peak MiB", "H2D / compute / D2H ms"]
    if has_only:
        header += ["device-only img/s"]
    if has_e2e:
        header += ["e2e img/s", "e2e / pure"]
    header.append("best")
    rows = []
    for r in report.results:
        cells = [
            str(r.batch_size), _fmt(r.images), _fmt(r.batches), _fmt(r.images_per_s), _fmt(r.latency.median_ms),
            _fmt(r.latency.p90_ms), _fmt(r.latency.p99_ms), _fmt(r.ms_per_image, 3), _fmt(r.achieved_tflops, 3),
            _pct(r.share_of_limit),
            _fmt(None if r.host_peak_rss_bytes is None else r.host_peak_rss_bytes / MIB, 0),
        ]
        if has_gpu:
            cells.append(_fmt(None if r.device_peak_bytes is None else r.device_peak_bytes / MIB, 0))
            cells.append("—" if r.split is None else
                         f"{r.split.h2d_ms:.2f} / {r.split.compute_ms:.2f} / {r.split.d2h_ms:.2f}")
        if has_only:
            cells.append(_fmt(r.device_only.images_per_s if r.device_only else None))
        if has_e2e:
            cells.append(_fmt(r.e2e.images_per_s if r.e2e else None))
            cells.append(_pct(r.e2e.ratio_to_pure if r.e2e else None))
        cells.append("**best**" if r.best else "")
        rows.append(cells)
    return header, rows


def render_markdown(reports: BenchReport | Sequence[BenchReport]) -> str:
    """A Markdown section per report: what was measured, then one row per batch size."""
    parts: list[str] = []
    for report in _as_list(reports):
        gflop = "unknown" if report.flops_per_image is None else f"{report.flops_per_image / 1e9:.2f}"
        runtime = ", ".join(f"{k}={v}" for k, v in report.runtime.items() if not isinstance(v, (dict, list)))
        parts.append(f"### {report.model} — {report.label} on {report.device}\n")
        parts.append(f"- input {report.input_size[0]}x{report.input_size[1]}, {gflop} GFLOP/image "
                     f"(conv+linear, 2 FLOP/MAC); limit {report.limit_tflops or '—'} TFLOP/s")
        parts.append(f"- runtime: {runtime or '—'}")
        parts.append(f"- weights: {report.weights}")
        s = report.settings
        loop = f"{s.get('iters')} timed calls" if s.get("iters") else f"{s.get('duration_s')} s"
        parts.append(f"- warm-up {s.get('warmup')} calls, {loop} per batch size; {s.get('input')}")
        parts.append(f"- a latency is {report.pure_includes}; percentiles: {s.get('percentiles')}")
        for note in report.notes:
            parts.append(f"- note: {note}")
        header, rows = table_rows(report)
        parts.append("")
        parts.append("| " + " | ".join(header) + " |")
        parts.append("| " + " | ".join(["---:"] * (len(header) - 1) + [":---:"]) + " |")
        parts.extend("| " + " | ".join(cells) + " |" for cells in rows)
        parts.append("")
    return "\n".join(parts)


def plot_reports(reports: BenchReport | Sequence[BenchReport], path: str | os.PathLike) -> Path:
    """PNG: images/s (left) and p50 (solid) / p90 (dashed) latency (right) against batch size.

    One line per report label (backend/precision); uses the Agg canvas, no display needed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    items = _as_list(reports)
    if not items:
        raise ValueError("nothing to plot")
    fig = Figure(figsize=(11, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax_t, ax_l = fig.subplots(1, 2)
    for index, report in enumerate(items):
        color = f"C{index % 10}"
        bs = [r.batch_size for r in report.results]
        ax_t.plot(bs, [r.images_per_s for r in report.results], "o-", color=color, label=report.label)
        ax_l.plot(bs, [r.latency.median_ms for r in report.results], "o-", color=color,
                  label=f"{report.label} p50")
        ax_l.plot(bs, [r.latency.p90_ms for r in report.results], "s--", color=color,
                  label=f"{report.label} p90")
    models = sorted({r.model for r in items})
    for ax in (ax_t, ax_l):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    ax_t.set_ylabel("images / s")
    ax_t.set_title(f"throughput — {', '.join(models)}")
    ax_l.set_ylabel("latency per batch, ms")
    ax_l.set_title("p50 (solid) / p90 (dashed)")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out
