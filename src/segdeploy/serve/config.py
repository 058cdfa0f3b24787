"""Settings of a served model: batching, limits, the start-up gate. One dataclass, shared by the
plain server (:mod:`segdeploy.serve.app`), the CLI and the Ray Serve deployment."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from segdeploy.core.errors import UsageError

#: environment variable read when no --api-key is given
API_KEY_ENV = "SEGDEPLOY_API_KEY"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeConfig:
    """How requests are batched and limited.

    Attributes:
        max_batch_size: images per forward pass at most (1 = one request per pass, rembg's way).
        max_wait_ms: how long the first request of a batch waits for company, in milliseconds.
        max_queue: requests waiting for inference at most; one more gets 503 + Retry-After.
        workers: inference workers, each with its own runtime and thread (a worker never runs two
            batches at once); on a small CPU one worker using every core is fastest.
        request_timeout_s: end-to-end limit of one request (read, queue, inference, encode): 504.
        max_body_bytes: request bodies larger than this get 413 before they are read in full.
        max_pixels: images declaring more pixels (width x height) get 413 before decoding.
        io_threads: threads that decode uploads and encode results, off the event loop.
        allow_unverified: serve even when the start-up fidelity gate fails (said in /v1/models and
            in an ``X-Segdeploy-Unverified: true`` header on every response).
        check_images: built-in check images the start-up gate runs on (>= 16 outside tests).
        check_size: (H, W) of the generated check images.
        api_key: required as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` on every route but
            /healthz and /readyz when set.
    """

    max_batch_size: int = 8
    max_wait_ms: float = 10.0
    max_queue: int = 128
    workers: int = 1
    request_timeout_s: float = 60.0
    max_body_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    io_threads: int = 4
    allow_unverified: bool = False
    check_images: int = 16
    check_size: tuple[int, int] = (240, 320)
    api_key: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_queue", "workers", "max_body_bytes", "max_pixels", "io_threads",
                     "check_images"):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"serve: {name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0 or self.request_timeout_s <= 0:
            raise UsageError("serve: --max-wait-ms must be >= 0 and --timeout > 0")

    def public(self) -> dict[str, Any]:
        """The settings as shown by GET /v1/models (never the API key)."""
        data = asdict(self)
        data["api_key"] = bool(self.api_key)
        return data


def resolve_api_key(host: str, api_key: str | None) -> str | None:
    """The API key to enforce: ``api_key``, else $SEGDEPLOY_API_KEY; required off loopback.

    Raises:
        UsageError: ``host`` is not a loopback address and no key is set.
    """
    key = api_key or os.environ.get(API_KEY_ENV) or None
    if host not in LOOPBACK_HOSTS and not key:
        raise UsageError(f"serve: binding to {host} exposes the server beyond this machine; set --api-key "
                         f"(or ${API_KEY_ENV}) so that clients must authenticate, or keep --host 127.0.0.1")
    return key
