"""Prometheus metrics of one app, in a registry of its own (two apps in one process — tests,
embedding — never share or clash over counters)."""

from __future__ import annotations

from typing import Callable

BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServeMetrics:
    """Request counts and latencies by route and status, batch sizes, queue depth, inference time.

    Names (all prefixed ``segdeploy_``): ``requests_total{route,method,status}``,
    ``request_seconds{route,status}`` (histogram, seconds from first byte in to last byte out),
    ``batch_size{model}`` (histogram of images per forward pass), ``queue_depth{model}`` (requests
    waiting for inference), ``inference_seconds{model}`` (histogram, one forward pass),
    ``unverified{model}`` (1 when served despite a failed or skipped gate).
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("segdeploy_requests", "HTTP requests by route, method and status",
                                ("route", "method", "status"), registry=self.registry)
        self.latency = Histogram("segdeploy_request_seconds", "HTTP request latency (s) by route and status",
                                 ("route", "status"), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("segdeploy_batch_size", "images per forward pass", ("model",),
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("segdeploy_queue_depth", "requests waiting for inference", ("model",),
                                 registry=self.registry)
        self.inference = Histogram("segdeploy_inference_seconds", "one forward pass (s)", ("model",),
                                   buckets=LATENCY_BUCKETS, registry=self.registry)
        self.unverified = Gauge("segdeploy_unverified", "1 when the model is served without a passed gate",
                                ("model",), registry=self.registry)

    def track_queue(self, model: str, depth: Callable[[], float]) -> None:
        self.queue_depth.labels(model).set_function(depth)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, str(status)).observe(seconds)

    def observe_batch(self, model: str, size: int, seconds: float) -> None:
        self.batch_size.labels(model).observe(size)
        self.inference.labels(model).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
