"""Pure-inference measurement of the bench harness: inputs, the timed loop, device-only and split.

See :mod:`segdeploy.bench.harness` for what a latency includes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from segdeploy.bench.memory import CudaCounters, host_peak_rss_bytes, reset_host_peak
from segdeploy.bench.options import MIN_BUFFERS, Roofline, TimingPlan
from segdeploy.bench.records import BatchResult, DeviceOnly, DeviceSplit
from segdeploy.bench.timing import LatencyStats, achieved_tflops, now, percentile, share_of_limit, throughput
from segdeploy.engine.inference_threads import calls_in_flight


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
    cuda: CudaCounters | None,
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


def _timed_loop_concurrent(
    call: Callable[[int], int], calls: int, *, iters: int | None, duration: float | None,
) -> tuple[list[float], list[float], int, float]:
    """:func:`_timed_loop` for a runtime that takes ``calls`` calls at once (OpenVINO streams):
    that many threads call together, as the pipeline does; ``iters`` counts calls over all threads.
    Latencies are per call (each stream's own); images/s is the total over the wall time."""
    import threading

    host: list[float] = []
    images = [0]
    started = [0]
    lock = threading.Lock()
    start = now()

    def worker() -> None:
        while True:
            with lock:
                if iters is not None and started[0] >= iters:
                    return
                if duration is not None and started[0] >= calls and now() - start >= duration:
                    return
                i = started[0]
                started[0] += 1
            t0 = now()
            rows = call(i)
            t1 = now()
            with lock:
                images[0] += rows
                host.append(t1 - t0)

    threads = [threading.Thread(target=worker, name=f"segdeploy-bench{k}") for k in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return host, [], images[0], now() - start


def _device_only(
    runtime: Any, buffers: list[np.ndarray], cuda: CudaCounters, iters: int | None, duration: float | None,
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


def measure_batch(
    runtime: Any, batch_size: int, input_size: tuple[int, int], timing: TimingPlan, *,
    cuda: CudaCounters | None, roofline: Roofline | None = None, wanted: tuple[int, ...] | None = None,
) -> BatchResult:
    """Time pure inference of ``runtime`` at ``batch_size`` (see :mod:`segdeploy.bench.harness`).

    Args:
        runtime: the runtime to time (``run``, ``warmup``; optionally ``run_device``, ``staging``).
        batch_size: rows per ``run`` call.
        input_size: (H, W) of the synthetic input.
        timing: warm-up, timed calls or duration, input buffers and their seed.
        cuda: device counters when the runtime runs on CUDA, else None.
        roofline: FLOP per image and the limits the achieved rates are judged against (default: none).
        wanted: the outputs ``run`` is asked for (``outputs=``); None for all.
    """
    roofline = roofline or Roofline()
    buffers = make_inputs(batch_size, input_size, num_buffers=timing.num_buffers, seed=timing.seed)
    rss_scope = "batch" if reset_host_peak() else "process"
    if cuda is not None:
        cuda.sync()
        cuda.reset_peak()
    runtime.warmup(buffers[0].shape)
    # Only the outputs decoding reads, as the product's pipeline asks for them (when run() can).
    run = (lambda x: runtime.run(x, outputs=wanted)) if wanted is not None else runtime.run
    outputs: list[np.ndarray] = []
    for i in range(timing.warmup):
        outputs = run(buffers[i % timing.num_buffers])
        _count_rows(outputs, batch_size)
    if cuda is not None and not outputs:  # the D2H copy probe needs the outputs' sizes
        outputs = run(buffers[0])
    staging = getattr(runtime, "staging", None)
    real_split = cuda is not None and callable(getattr(staging, "time_copies", None))
    if real_split:
        staging.time_copies(True)

    def call(i: int) -> int:
        return _count_rows(run(buffers[i % timing.num_buffers]), batch_size)

    calls = calls_in_flight(runtime)
    if calls > 1 and cuda is None:
        host, events, images, wall = _timed_loop_concurrent(call, calls, iters=timing.iters, duration=timing.duration)
    else:
        host, events, images, wall = _timed_loop(call, iters=timing.iters, duration=timing.duration, cuda=cuda)
    latency = LatencyStats.from_seconds(host)
    ips = throughput(images, wall)
    tflops = achieved_tflops(roofline.flops_per_image, ips)
    extra: dict[str, Any] = {}
    if cuda is not None:
        extra = _cuda_figures(runtime, buffers, outputs, events, cuda, timing, roofline,
                              staging if real_split else None)
    return BatchResult(
        batch_size=batch_size,
        images=images,
        batches=latency.count,
        wall_s=wall,
        images_per_s=ips,
        latency=latency,
        ms_per_image=latency.median_ms / batch_size,
        achieved_tflops=tflops,
        share_of_limit=share_of_limit(tflops, roofline.limit_tflops),
        share_of_image_limit=share_of_limit(ips, roofline.limit_images_per_s),
        host_peak_rss_bytes=host_peak_rss_bytes(),
        host_peak_rss_scope=rss_scope,
        **extra,
    )


def _cuda_figures(
    runtime: Any, buffers: list[np.ndarray], outputs: Sequence[np.ndarray], events: list[float],
    cuda: CudaCounters, timing: TimingPlan, roofline: Roofline, staging: Any,
) -> dict[str, Any]:
    """The CUDA-only fields of a :class:`BatchResult`, after the timed loop.

    ``staging`` is the runtime's staging when it timed its own copies during the loop (it is
    switched off here), else None.
    """
    extra: dict[str, Any] = {"cuda_latency": LatencyStats.from_seconds(events)}
    input_bytes = int(buffers[0].nbytes)
    output_bytes = int(sum(np.asarray(o).nbytes for o in outputs))
    h2d = cuda.copy_ms(input_bytes, "h2d")
    d2h = cuda.copy_ms(output_bytes, "d2h")
    splits = list(staging.splits) if staging is not None else []
    if staging is not None:
        staging.time_copies(False)
    if callable(getattr(runtime, "run_device", None)):
        only = _device_only(runtime, buffers, cuda, timing.iters, timing.duration, warmup=max(1, min(timing.warmup, 3)))
        only_tflops = achieved_tflops(roofline.flops_per_image, only.images_per_s)
        only = replace(
            only, achieved_tflops=only_tflops,
            share_of_limit=share_of_limit(only_tflops, roofline.limit_tflops),
            share_of_image_limit=share_of_limit(only.images_per_s, roofline.limit_images_per_s),
        )
        extra["device_only"] = only
        extra["split"] = DeviceSplit(h2d, only.latency.median_ms, d2h, input_bytes, output_bytes, "run_device")
    if splits:
        # The copies run() really does (pinned, non-blocking, only the decoded outputs), timed by
        # CUDA events inside run(); compute = device time between them.
        med = [percentile([s[k] for s in splits], 0.5) for k in range(3)]
        extra["split"] = DeviceSplit(med[0], med[1], med[2], input_bytes, output_bytes, "run-events")
    elif "split" not in extra:
        compute = max(0.0, extra["cuda_latency"].median_ms - h2d - d2h)
        extra["split"] = DeviceSplit(h2d, compute, d2h, input_bytes, output_bytes, "copy-probe")
    cuda.sync()
    peak, reserved, used = cuda.peaks()
    extra.update(device_peak_bytes=peak, device_reserved_bytes=reserved, device_used_bytes=used)
    return extra
