"""uvicorn's HTTP/1.1 protocol with a header deadline and a connection cap.

uvicorn times out idle keep-alive connections, but not a fresh connection whose request line or
headers never finish: each such client holds a file descriptor for as long as it likes (a probe
held about 21,000). :func:`guarded_protocol` returns its h11 protocol with two additions:

* the request headers must be complete within ``header_timeout_s`` of the connection opening or
  of the previous answer, else the connection is closed (a slow *body* is bounded by the
  per-request timeout instead);
* at most ``max_connections`` are open; one more is closed on arrival.

Pass the class to ``uvicorn.run(app, http=...)``; h11's own ``h11_max_incomplete_event_size``
bounds the size of the headers.
"""

from __future__ import annotations

import asyncio


def guarded_protocol(header_timeout_s: float, max_connections: int):
    """A subclass of uvicorn's ``H11Protocol`` enforcing both limits."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._header_deadline: asyncio.TimerHandle | None = None
            over = len(self.connections) >= max_connections
            super().connection_made(transport)
            if over:
                transport.close()  # connection_lost removes it from the set
                return
            self._start_header_deadline()

        def _start_header_deadline(self) -> None:
            self._cancel_header_deadline()
            self._header_deadline = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def _cancel_header_deadline(self) -> None:
            if getattr(self, "_header_deadline", None) is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _headers_too_slow(self) -> None:
            self._header_deadline = None
            waiting = self.cycle is None or self.cycle.response_complete
            if waiting and not self.transport.is_closing():
                self.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:
                self._cancel_header_deadline()  # a request's headers arrived: the route's timeout rules now

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._start_header_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_deadline()
            super().connection_lost(exc)

    return GuardedH11Protocol


def uvicorn_settings(config) -> dict:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` from a :class:`ServeConfig`."""
    return {"http": guarded_protocol(config.header_timeout_s, config.max_connections),
            "timeout_keep_alive": max(1, min(5, int(config.header_timeout_s))),
            "h11_max_incomplete_event_size": 64 * 1024}
