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
        max_inflight_bytes: memory the requests in flight may hold, priced from each image's header
            before decoding (:mod:`segdeploy.serve.admission`); over it: 503 + Retry-After. None =
            25 % of the memory available at start-up.
        header_timeout_s: a connection must deliver a request's headers within this many seconds
            of opening (or of its previous answer), else it is closed.
        max_connections: open connections at most; more are closed on arrival (file descriptors
            stay bounded however many stalled clients connect).
        allow_unverified: serve even when the start-up fidelity gate fails (said in /v1/models and
            in an ``X-Segdeploy-Unverified: true`` header on every response).
        check_images: the start-up gate's images: a count of built-in ones (generated, plus the
            packaged photos for trained weights), or a folder of images; fewer than 16 never
            verify (the model serves only with allow_unverified).
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
    max_inflight_bytes: int | None = None
    header_timeout_s: float = 10.0
    max_connections: int = 512
    allow_unverified: bool = False
    check_images: int | str = 16
    check_size: tuple[int, int] = (240, 320)
    api_key: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_queue", "workers", "max_body_bytes", "max_pixels", "io_threads",
                     "max_connections"):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"serve: {name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if isinstance(self.check_images, int) and self.check_images < 1:
            raise UsageError(f"serve: --check-images must be at least 1 or a folder, got {self.check_images}")
        if self.max_inflight_bytes is not None and int(self.max_inflight_bytes) < 1:
            raise UsageError(f"serve: --max-inflight-bytes must be positive, got {self.max_inflight_bytes}")
        if self.max_wait_ms < 0 or self.request_timeout_s <= 0 or self.header_timeout_s <= 0:
            raise UsageError("serve: --max-wait-ms must be >= 0, --timeout and --header-timeout > 0")

    def public(self) -> dict[str, Any]:
        """The settings as shown by GET /v1/models (never the API key, never a server path)."""
        data = asdict(self)
        data["api_key"] = bool(self.api_key)
        if isinstance(self.check_images, str):
            data["check_images"] = os.path.basename(os.path.normpath(self.check_images))
        return data


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_bytes(text: str, flag: str = "--max-inflight-bytes") -> int:
    """``"2GB"``, ``"512MiB"``, ``"1500000000"`` -> bytes.

    Raises:
        UsageError: not a positive number with a known unit.
    """
    import re

    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS or float(match.group(1)) <= 0:
        raise UsageError(f"{flag}: expected a size such as 2GB, 512MiB or 1500000000, got {text!r}")
    return int(float(match.group(1)) * _UNITS[unit])


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
