"""The ASGI layer in front of every route: API key, body-size limit, metrics, the unverified header.

It is a plain ASGI middleware (not a FastAPI dependency) so that an oversized body is refused
from its Content-Length, or as soon as the streamed bytes pass the limit, before a route reads it.
"""

from __future__ import annotations

import hmac
import json
import time

#: routes a load balancer probes without credentials, and the page with its packaged files (the
#: page asks for the key before it calls an API route)
OPEN_PATHS = ("/healthz", "/readyz", "/")
OPEN_PREFIXES = ("/static/",)


class BodyTooLarge(Exception):
    pass


async def _send_json(send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """Args: app, state (the app's :class:`~segdeploy.serve.app.ServerState`)."""

    def __init__(self, app, state):
        self.app = app
        self.state = state

    def _authorised(self, scope) -> bool:
        key = self.state.config.api_key
        if not key or scope["path"] in OPEN_PATHS or scope["path"].startswith(OPEN_PREFIXES):
            return True
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-api-key", b"").decode("latin-1")
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if auth.lower().startswith("bearer "):
            given = given or auth[7:].strip()
        return bool(given) and hmac.compare_digest(given.encode(), key.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = {"code": 500, "started": False}
        unverified = self.state.any_unverified()

        async def tracked_send(message):
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                extra = [(b"x-segdeploy-unverified", b"true")] if unverified else []
                if self.state.instance:
                    extra.append((b"x-segdeploy-instance", self.state.instance.encode("latin-1", "replace")))
                if extra:
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        limit = self.state.config.max_body_bytes
        seen = {"bytes": 0}

        async def limited_receive():
            message = await receive()
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > limit:
                    raise BodyTooLarge()
            return message

        too_large = f"request body is larger than this server's limit of {limit} bytes (--max-body-bytes)"
        try:
            if not self._authorised(scope):
                await _send_json(tracked_send, 401, "missing or wrong API key: send 'Authorization: Bearer KEY' "
                                 "or 'X-API-Key: KEY'", [(b"www-authenticate", b"Bearer")])
                return
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                await _send_json(tracked_send, 413, too_large, [(b"connection", b"close")])
                return
            await self.app(scope, limited_receive, tracked_send)
        except BodyTooLarge:
            if not status["started"]:
                await _send_json(tracked_send, 413, too_large, [(b"connection", b"close")])
        except Exception:
            status["code"] = 500
            raise
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or ("unmatched" if status["code"] == 404 else scope["path"]
                                                     if scope["path"] in OPEN_PATHS else "other")
            self.state.metrics.observe_request(label, scope.get("method", ""), status["code"],
                                               time.perf_counter() - start)
