"""CUDA helpers of the torch backend: pinned double-buffered staging and a bounded CUDA-graph cache.

Both are written against a small surface of ``torch`` so that their bookkeeping (slot rotation,
event waits, LRU eviction) is unit-tested on the CPU, where ``pin_memory`` is off and events are
stand-ins; on CUDA the same code moves real bytes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Hashable

import numpy as np


class GraphCache:
    """At most ``capacity`` entries, least recently used evicted first.

    A CUDA graph holds its own memory pool and static input/output tensors; keeping one per
    input shape without bound (a batch sweep, native-size photos) keeps every pool alive. Evicted
    entries are handed to ``on_evict`` (which drops the graph so its pool can be freed).
    """

    def __init__(self, capacity: int = 8, on_evict: Callable[[Hashable, Any], None] | None = None):
        if capacity < 1:
            raise ValueError(f"graph cache capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.on_evict = on_evict
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self.evictions = 0

    def get(self, key: Hashable) -> Any | None:
        if key not in self._items:
            return None
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: Hashable, value: Any) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            old_key, old = self._items.popitem(last=False)
            self.evictions += 1
            if self.on_evict is not None:
                self.on_evict(old_key, old)

    def keys(self) -> list[Hashable]:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)


class Staging:
    """Two pinned host buffers per (shape, dtype), used in turn, for input and for output copies.

    Input: the numpy batch is copied into a pinned slot, then ``to(device, non_blocking=True)``
    on a side copy stream; the compute stream waits on that copy only. The slot's event is
    recorded after the copy, and the slot is not overwritten before that event completed, so a
    caller (e.g. a second pipeline thread) can fill slot B while slot A is still in flight.
    Output: each selected output is copied device -> pinned slot with ``non_blocking=True`` and one
    event is waited on before the host reads it (no pageable synchronous copy).

    ``torch`` is the module; with ``cuda=False`` buffers are ordinary host tensors and events are
    no-ops (the bookkeeping is what a CPU test can check).
    """

    SLOTS = 2

    def __init__(self, torch, device, cuda: bool):
        self.torch = torch
        self.device = device
        self.cuda = cuda
        self._host: dict[tuple, list[Any]] = {}
        self._events: dict[tuple, list[Any]] = {}
        self._turn: dict[tuple, int] = {}
        self.copy_stream = torch.cuda.Stream(device) if cuda else None
        #: with :meth:`time_copies`: CUDA events of the current call and (h2d, compute, d2h) ms per call
        self.timing: dict[str, Any] | None = None
        self.splits: list[tuple[float, float, float]] = []

    def time_copies(self, on: bool = True) -> None:
        """Record CUDA events around the real copies and the compute of each call (CUDA only).

        Per call, ``splits`` gets (H2D ms, compute ms, D2H ms): H2D = the pinned non-blocking copy
        on the copy stream; compute = from the copy's end to the first output copy (the forward,
        including the wait for the copy); D2H = the output copies to pinned memory.
        """
        self.timing = {} if (on and self.cuda) else None
        self.splits = []

    def _slot(self, kind: str, shape: tuple[int, ...], dtype) -> tuple[Any, int, tuple]:
        key = (kind, tuple(shape), str(dtype))
        if key not in self._host:
            torch = self.torch
            self._host[key] = [torch.empty(shape, dtype=dtype, pin_memory=self.cuda) for _ in range(self.SLOTS)]
            self._events[key] = [None] * self.SLOTS
            self._turn[key] = 0
        turn = self._turn[key]
        self._turn[key] = (turn + 1) % self.SLOTS
        event = self._events[key][turn]
        if event is not None:
            event.synchronize()  # the slot's previous copy must be done before it is overwritten
        return self._host[key][turn], turn, key

    def to_device(self, batch: np.ndarray):
        """Host numpy batch -> device tensor through a pinned slot; the current stream may use it."""
        torch = self.torch
        # uint8 photos go up as they are (4x fewer bytes than float32; preprocessing runs on the device)
        dtype = torch.uint8 if batch.dtype == np.uint8 else torch.float32
        host, turn, key = self._slot("in", batch.shape, dtype)
        host.numpy()[...] = batch
        if not self.cuda:
            return host.clone()
        with torch.cuda.stream(self.copy_stream):
            if self.timing is not None:
                self.timing["h2d_start"] = _recorded(torch, self.copy_stream)
            x = host.to(self.device, non_blocking=True)
            event = torch.cuda.Event(enable_timing=self.timing is not None)
            event.record(self.copy_stream)
            if self.timing is not None:
                self.timing["h2d_end"] = event
        self._events[key][turn] = event
        torch.cuda.current_stream(self.device).wait_event(event)
        # x was allocated on the copy stream and is used on the compute stream.
        x.record_stream(torch.cuda.current_stream(self.device))
        return x

    def to_host(self, tensors: list, keep_dtype: bool = False) -> list[np.ndarray]:
        """Device tensors -> float32 (``keep_dtype``: their own dtype) numpy arrays via pinned slots
        (one wait for all copies)."""
        torch = self.torch
        if not self.cuda:
            return [(t.detach() if keep_dtype else t.detach().float()).cpu().numpy() for t in tensors]
        slots = []
        stream = torch.cuda.current_stream(self.device)
        if self.timing is not None:
            self.timing["d2h_start"] = _recorded(torch, stream)
        for t in tensors:
            t = t.detach() if keep_dtype else t.detach().float()
            host, turn, key = self._slot("out", tuple(t.shape), t.dtype)
            host.copy_(t, non_blocking=True)
            slots.append((host, turn, key))
        event = torch.cuda.Event(enable_timing=self.timing is not None)
        event.record(stream)
        event.synchronize()
        if self.timing is not None:
            t = self.timing
            # elapsed_time works across streams: events are device-wide timestamps.
            self.splits.append((t["h2d_start"].elapsed_time(t["h2d_end"]),
                                t["h2d_end"].elapsed_time(t["d2h_start"]), t["d2h_start"].elapsed_time(event)))
        # The pinned slots are reused two calls later: hand out copies.
        return [host.numpy().copy() for host, _, _ in slots]

    def describe(self) -> dict[str, Any]:
        return {"pinned": self.cuda, "slots": self.SLOTS, "buffers": len(self._host) * self.SLOTS}


def _recorded(torch, stream):
    event = torch.cuda.Event(enable_timing=True)
    event.record(stream)
    return event


def batch_bucket(rows: int, buckets: tuple[int, ...] | None) -> int:
    """The bucket a batch of ``rows`` is padded to (smallest bucket >= rows; rows itself when none)."""
    if not buckets:
        return rows
    for size in sorted(buckets):
        if size >= rows:
            return size
    return rows
