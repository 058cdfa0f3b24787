"""The serving part of ``gpu_check.py``: the batching server against one request per forward pass.

Both servers are ``segdeploy serve`` processes on loopback ports (the same model, backend and
precision); a bounded async client keeps ``concurrency`` requests in flight over photo-like JPEGs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from serve_load import Server, jpegs, level


class _Args:
    """The attributes serve_load.Server reads."""

    def __init__(self, model: str, weights: str, max_wait_ms: float):
        self.model, self.weights, self.max_wait_ms = model, weights, max_wait_ms


def _serve_once(device: str, max_batch: int, concurrency: int, requests: int, images: list[bytes],
                extra: tuple[str, ...], dry: bool) -> dict[str, Any]:
    args = _Args("u2netp", "official", max_wait_ms=5.0)
    # fp16 on the GPU (what auto picks there); --allow-unverified only for the CPU dry run, whose
    # few tiny check images cannot make a verdict.
    precision = None if dry else "fp16"
    # Eager fp16 channels_last for both servers alike. CUDA graphs failed the start-up gate on the
    # H200 (2026-12-04, docs/gpu.md), and compile pads every batch to 64, which would make the
    # one-per-pass server pay for 64 images per request.
    mode = () if dry else ("--torch-mode", "eager", "--channels-last")
    server = Server(args, max_batch, "torch", precision, 4 if dry else 16,
                    extra=("--device", device, *mode, *extra))
    try:
        ready = server.wait_ready(600)
        warm = asyncio.run(level(server.url, "u2netp", images, concurrency, concurrency * 2))
        row = asyncio.run(level(server.url, "u2netp", images, concurrency, requests))
        row.update(ready_seconds=round(ready, 1), warm_rps=warm["throughput_rps"], command=" ".join(server.command[2:]))
        return row
    finally:
        server.stop()


def measure_serving(device: str, concurrency: int, requests: int, dry: bool) -> dict[str, Any]:
    images = jpegs(16, (48, 64) if dry else (480, 640))
    extra: tuple[str, ...] = ("--allow-unverified",) if dry else ()
    t0 = time.perf_counter()
    batching = _serve_once(device, 4 if dry else 32, concurrency, requests, images, extra, dry)
    single = _serve_once(device, 1, concurrency, requests, images, extra, dry)
    ratio = (batching["throughput_rps"] / single["throughput_rps"]
             if batching.get("throughput_rps") and single.get("throughput_rps") else None)
    return {"concurrency": concurrency, "batching": batching, "one_per_pass": single,
            "batching_over_one_per_pass": round(ratio, 2) if ratio else None,
            "seconds": round(time.perf_counter() - t0, 1)}
