"""Result records of ``segdeploy bench``: dataclasses, JSON (de)serialisation."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from segdeploy.bench.timing import LatencyStats

MIB = 1 << 20

PURE_INCLUDES = (
    "one Runtime.run call: host->device copy, forward, device->host copy of the outputs decoding reads "
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

    ``method``: "run-events" (CUDA events recorded inside ``run`` around its real pinned copies and
    the compute between them), "run_device" (forward timed with CUDA events on device-resident
    input; copies probed on pinned buffers) or "copy-probe" (forward = median run time minus the
    probed copies; an estimate).
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


