"""Dynamic batching: concurrent requests share forward passes.

Each request puts one preprocessed CHW array on a bounded asyncio queue and awaits a future. A
worker task takes the first waiting array, then keeps taking arrays **of the same input shape**
until it holds ``max_batch_size`` or ``max_wait_ms`` has passed since it took the first one
(arrays of another shape are held for the next batch, in order). The batch is stacked and run on
the worker's runtime in the worker's own thread, so the event loop keeps accepting and decoding
requests meanwhile and one runtime never sees two batches at once. While a batch runs, the next
requests queue up, so under load batches fill without waiting.

Batch sizes come from a short list, :func:`batch_sizes` (1, 2, 4, ... and ``max_batch_size``): a
worker holding 5 arrays runs 4 and keeps the fifth at the front of its line for the next batch.
Why: a static-shape engine compiles one model per input shape (OpenVINO static shapes, a TensorRT
profile); serving every size up to 8 compiled 8 models per stream (u2netp, 2 streams: RSS 7.4 GB
and 2-3 requests/s while compiling), the list caps it at 4.

Isolation: a request whose future is already done (timed out, client gone) is dropped before the
batch is formed; if a batch of several fails in the runtime, each item is retried alone so that
only the item that fails gets the error.
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


class QueueFull(Exception):
    """The queue holds ``max_queue`` requests already (HTTP 503 with Retry-After)."""


@dataclass
class BatchResult:
    """One item's outputs (no batch axis, spec output order) and the batch it ran in."""

    outputs: list[np.ndarray]
    batch_size: int
    infer_s: float


@dataclass
class _Job:
    array: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """Batches arrays for ``runtimes`` (one worker task and thread per runtime).

    Args:
        runtimes: objects with ``run(NCHW float32) -> list of batch-first arrays``.
        max_batch_size: images per forward pass at most.
        max_wait_ms: how long a batch's first item waits for more items (milliseconds).
        max_queue: waiting items at most; :meth:`submit` raises :class:`QueueFull` beyond it.
        on_batch: called as ``on_batch(size, seconds)`` after every forward pass (metrics).
        bucketed: run only :func:`batch_sizes` (default); False runs whatever size has gathered.
    """

    def __init__(self, runtimes: list[Any], *, max_batch_size: int = 8, max_wait_ms: float = 10.0,
                 max_queue: int = 128, on_batch: Callable[[int, float], None] | None = None,
                 bucketed: bool = True):
        self.runtimes = list(runtimes)
        self.max_batch_size = int(max_batch_size)
        self.sizes = batch_sizes(self.max_batch_size) if bucketed else list(range(1, self.max_batch_size + 1))
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self.max_queue = int(max_queue)
        self.on_batch = on_batch
        self._queue: asyncio.Queue | None = None
        self._held: list[collections.deque] = []
        self._tasks: list[asyncio.Task] = []
        self._threads: list[ThreadPoolExecutor] = []
        self._running = 0  # items inside a forward pass now

    # -- life cycle -----------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return bool(self._tasks)

    def start(self) -> None:
        """Start one worker task per runtime on the running event loop (idempotent)."""
        if self._tasks:
            return
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        for index, runtime in enumerate(self.runtimes):
            thread = ThreadPoolExecutor(1, thread_name_prefix=f"segdeploy-infer{index}")
            held: collections.deque = collections.deque()
            self._threads.append(thread)
            self._held.append(held)
            self._tasks.append(asyncio.create_task(self._worker(runtime, thread, held), name=f"batcher{index}"))

    async def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Finish what is queued (up to ``drain_timeout_s``), then stop the workers and threads."""
        deadline = time.perf_counter() + drain_timeout_s
        while self.depth() + self._running and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for thread in self._threads:
            thread.shutdown(wait=True)
        self._tasks, self._threads, self._held = [], [], []

    def depth(self) -> int:
        """Items waiting for a forward pass (queued or held back for a batch of their shape)."""
        queued = self._queue.qsize() if self._queue is not None else 0
        return queued + sum(len(h) for h in self._held)

    # -- requests -------------------------------------------------------------------------------
    def submit(self, array: np.ndarray) -> asyncio.Future:
        """Queue one CHW float32 array; the returned future resolves to a :class:`BatchResult`.

        Raises:
            QueueFull: ``max_queue`` items are waiting already.
        """
        if not self._tasks:
            self.start()
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Job(array, future))
        except asyncio.QueueFull:
            raise QueueFull(f"{self.max_queue} requests are waiting already") from None
        return future

    # -- the worker -----------------------------------------------------------------------------
    async def _next(self, held: collections.deque, shape: tuple | None, timeout: float | None):
        """The next live job: a held one of ``shape`` first, else from the queue (None on timeout)."""
        if shape is not None:
            for job in list(held):
                if job.array.shape == shape:
                    held.remove(job)
                    return job
        elif held:
            return held.popleft()
        if timeout is None:
            return await self._queue.get()
        if timeout <= 0:
            try:
                return self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def _worker(self, runtime, thread: ThreadPoolExecutor, held: collections.deque) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._next(held, None, None)
            if first.future.done():
                continue  # timed out or cancelled while waiting
            batch = [first]
            shape = first.array.shape
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch_size:
                job = await self._next(held, shape, deadline - loop.time())
                if job is None:
                    break
                if job.future.done():
                    continue
                if job.array.shape != shape:
                    held.append(job)  # another input size: it starts a later batch
                    continue
                batch.append(job)
            size = max(s for s in self.sizes if s <= len(batch))
            for job in reversed(batch[size:]):  # not a size the engine has compiled: next batch, first in line
                held.appendleft(job)
            batch = batch[:size]
            self._running += len(batch)
            try:
                await self._run(loop, runtime, thread, batch)
            finally:
                self._running -= len(batch)

    async def _run(self, loop, runtime, thread, batch: list[_Job]) -> None:
        stacked = np.stack([job.array for job in batch]).astype(np.float32, copy=False)
        start = time.perf_counter()
        try:
            outputs = await loop.run_in_executor(thread, runtime.run, stacked)
        except Exception as exc:  # noqa: BLE001 - isolated below, reported per item
            if len(batch) == 1:
                _settle(batch[0].future, exc=exc)
                return
            for job in batch:  # find the item that fails; the others still get their result
                await self._run(loop, runtime, thread, [job])
            return
        seconds = time.perf_counter() - start
        if self.on_batch is not None:
            self.on_batch(len(batch), seconds)
        for index, job in enumerate(batch):
            _settle(job.future, result=BatchResult([np.asarray(o[index]) for o in outputs], len(batch), seconds))


def batch_sizes(max_batch_size: int) -> list[int]:
    """The batch sizes a worker runs: powers of two below ``max_batch_size``, and it (6 -> 1, 2, 4, 6)."""
    sizes = [1]
    while sizes[-1] * 2 < max_batch_size:
        sizes.append(sizes[-1] * 2)
    return sizes + ([max_batch_size] if max_batch_size > 1 else [])


def _settle(future: asyncio.Future, result=None, exc: BaseException | None = None) -> None:
    if future.done():
        return  # the request gave up (timeout / disconnect); nobody reads this result
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
