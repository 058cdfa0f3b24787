"""Options of the bench harness: what :func:`segdeploy.bench.harness.benchmark` measures and how.

Plain frozen dataclasses without heavy imports, so that ``segdeploy.BenchOptions`` can be built
(and passed around, e.g. by a recipe) before numpy or a runtime is loaded. Values are checked when
the benchmark starts, with the same messages as the CLI's flags.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MIN_BUFFERS = 3


@dataclass(frozen=True)
class BenchOptions:
    """What to open, which batch sizes to time, how long, and what to judge the numbers against.

    Built with keywords, e.g. ``BenchOptions(backend="onnxruntime", batch_sizes=(1, 8), iters=20)``;
    every field has the default of the ``segdeploy bench`` flag of the same meaning.

    Attributes:
        backend: runtime to open (``segdeploy.backends.open_runtime``); ignored when ``benchmark``
            is given an opened ``runtime``.
        precision: precision to open it at (same caveat); also the precision the device's TFLOPS
            ceiling is looked up at when the runtime does not describe its own.
        batch_sizes: rows per ``run`` call to sweep, one measurement each.
        warmup: untimed ``run`` calls per batch size after ``Runtime.warmup(shape)``, so that
            compilation, autotuning and cuDNN's algorithm search stay out of the timed loop.
        iters: timed ``run`` calls per batch size (default 50 when ``duration`` is not given).
        duration: instead of ``iters``, time calls until this many seconds have passed (>= 1 call);
            giving both is an error.
        input_size: (H, W) or "HxW" of the synthetic input; default the spec's input size.
        images: folder of images for an end-to-end pass per batch size (the product's streaming
            pipeline, see :mod:`segdeploy.bench.harness`); None times pure inference only.
        device: "cpu" or "cuda[:N]"; on CUDA the harness also synchronises and times with CUDA events.
        weights: weights to open the runtime with; "random" is enough to measure speed.
        seed: seed of the synthetic inputs (not of random weights: see ``runtime_options``).
        num_buffers: rotated input buffers per batch size, >= 3 so that no cache holds "the" input.
        onnx_path: ONNX file for onnxruntime/openvino (default: export one).
        runtime_options: further keyword arguments of ``open_runtime`` (e.g. ``seed`` of random
            weights, torch's ``mode``).
        limit_tflops: compute ceiling for ``share_of_limit``; default a measured ceiling from
            docs/performance.md §2 when the device is known there, else None.
        limit_images_per_s: the model's images/s limit (docs/performance.md §2) for
            ``share_of_image_limit``.
        count_flops: count FLOP per image with :func:`segdeploy.bench.flops.flops_for_model`; off
            where repeated rounds of the same model need the count only once.
        e2e_workers: threads for reading and for writing (default min(8, CPU count)).
        e2e_max_images: use only the first N images of ``images``.
        label: name of this configuration in tables and plots (default "backend precision").
    """

    backend: str = "torch"
    precision: str = "fp32"
    batch_sizes: Sequence[int] = (1,)
    warmup: int = 10
    iters: int | None = None
    duration: float | None = None
    input_size: tuple[int, int] | str | None = None
    images: str | os.PathLike | None = None
    device: str = "cpu"
    weights: str | os.PathLike | None = "random"
    seed: int = 0
    num_buffers: int = MIN_BUFFERS
    onnx_path: str | os.PathLike | None = None
    runtime_options: dict[str, Any] | None = None
    limit_tflops: float | None = None
    limit_images_per_s: float | None = None
    count_flops: bool = True
    e2e_workers: int | None = None
    e2e_max_images: int | None = None
    label: str | None = None


@dataclass(frozen=True)
class TimingPlan:
    """How one batch size is timed (checked and resolved from :class:`BenchOptions`).

    Attributes:
        warmup: untimed calls before the timed loop.
        iters: timed calls, or None when ``duration`` bounds the loop instead.
        duration: seconds to keep calling (at least one call), or None when ``iters`` does.
        num_buffers: rotated input buffers (>= 3).
        seed: seed of the synthetic inputs.
    """

    warmup: int
    iters: int | None
    duration: float | None
    num_buffers: int = MIN_BUFFERS
    seed: int = 0


@dataclass(frozen=True)
class Roofline:
    """What a measured rate is judged against: the work per image and the limits of the device.

    Attributes:
        flops_per_image: FLOP of one image's forward, for ``achieved_tflops`` (None: not counted).
        limit_tflops: compute ceiling; ``share_of_limit`` = achieved / this (None: no share).
        limit_images_per_s: the model's images/s limit; ``share_of_image_limit`` = images/s / this.
    """

    flops_per_image: float | None = None
    limit_tflops: float | None = None
    limit_images_per_s: float | None = None
