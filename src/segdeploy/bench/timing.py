"""Latency statistics, throughput and achieved compute rate: the arithmetic of ``segdeploy bench``.

Conventions (docs/performance.md §6):

* Latencies are per *batch* (one ``run`` call), kept in seconds while measuring and reported in
  milliseconds.
* Percentiles use linear interpolation between closest ranks — Hyndman & Fan (1996) definition 7,
  the default of ``numpy.percentile`` and of R's ``quantile``: for the sorted samples
  ``x[0] <= ... <= x[n-1]`` and a quantile ``q`` in [0, 1], ``h = (n - 1) * q`` and
  ``P(q) = x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``.
  With few samples p99 is therefore an interpolation towards the maximum, not an observed value;
  the sample count is always reported beside it.
* Throughput is ``images actually processed / wall seconds`` over the whole timed loop: the
  images are counted from what each call really returned, never from a batch size typed by a
  user times an iteration count (a partial last batch would be over-counted).
* Achieved compute rate is ``FLOP per image * images per second / 1e12`` TFLOP/s, with FLOP per
  image from :mod:`segdeploy.bench.flops` (convolutions and linear layers, 2 FLOP per MAC).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-quantile (``q`` in [0, 1]) of ``samples`` by linear interpolation (H&F type 7).

    Raises:
        ValueError: empty ``samples`` or ``q`` outside [0, 1].
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is outside [0, 1]")
    if len(samples) == 0:
        raise ValueError("percentile of an empty sample")
    ordered = sorted(float(v) for v in samples)
    h = (len(ordered) - 1) * q
    low = math.floor(h)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (h - low) * (ordered[high] - ordered[low])


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-batch latencies, in milliseconds.

    Attributes:
        count: number of timed batches the statistics are made of.
        min_ms, median_ms, mean_ms, p90_ms, p99_ms, max_ms: order statistics (see module doc for
            the percentile method), arithmetic mean.
        std_ms: sample standard deviation (n - 1 in the denominator; 0 for one sample).
    """

    count: int
    min_ms: float
    median_ms: float
    mean_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    std_ms: float

    @classmethod
    def from_seconds(cls, seconds: Sequence[float]) -> "LatencyStats":
        """Summarise latencies given in seconds."""
        if len(seconds) == 0:
            raise ValueError("no latency samples: nothing was timed")
        ms = [1e3 * float(s) for s in seconds]
        mean = sum(ms) / len(ms)
        var = sum((v - mean) ** 2 for v in ms) / (len(ms) - 1) if len(ms) > 1 else 0.0
        return cls(
            count=len(ms),
            min_ms=min(ms),
            median_ms=percentile(ms, 0.5),
            mean_ms=mean,
            p90_ms=percentile(ms, 0.9),
            p99_ms=percentile(ms, 0.99),
            max_ms=max(ms),
            std_ms=math.sqrt(var),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LatencyStats":
        return cls(**data)


def throughput(images: int, wall_seconds: float) -> float:
    """Images per second: images actually processed divided by the wall time that processed them."""
    if images < 0:
        raise ValueError(f"negative image count {images}")
    if not wall_seconds > 0:
        raise ValueError(f"wall time must be positive, got {wall_seconds}")
    return images / wall_seconds


def achieved_tflops(flops_per_image: float | None, images_per_second: float) -> float | None:
    """Achieved TFLOP/s = FLOP per image * images per second / 1e12 (None when FLOPs are unknown)."""
    if flops_per_image is None:
        return None
    return float(flops_per_image) * images_per_second / 1e12


def share_of_limit(achieved: float | None, limit: float | None) -> float | None:
    """``achieved / limit`` as a fraction (0.5 = 50 %); None when either is unknown or limit <= 0."""
    if achieved is None or limit is None or limit <= 0:
        return None
    return achieved / limit


def now() -> float:
    """Monotonic wall clock in seconds (``time.perf_counter``), for host-side timing."""
    return time.perf_counter()


class CudaEventTimer:
    """Times a region on the current CUDA stream with a pair of CUDA events.

    ``start()`` and ``stop()`` record events on the stream; ``elapsed_s()`` synchronises on the stop
    event and returns the GPU time between them in seconds (the device-side time of the region, free
    of host-side launch jitter but including any gap while the GPU waited for the host).
    """

    def __init__(self, stream=None):
        import torch

        self._torch = torch
        self._stream = stream
        self._start = torch.cuda.Event(enable_timing=True)
        self._stop = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        self._start.record(self._stream)

    def stop(self) -> None:
        self._stop.record(self._stream)

    def elapsed_s(self) -> float:
        self._stop.synchronize()
        return self._start.elapsed_time(self._stop) / 1e3
