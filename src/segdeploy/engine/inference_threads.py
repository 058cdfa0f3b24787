"""Daemon threads that call the runtime, so that the streaming pipeline and a test-time protocol
wait for it interruptibly.

Kept apart from :mod:`segdeploy.engine.pipeline`: how a runtime call is made to survive Ctrl-C is
one job, the read → batch → run → decode loop is another.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable

import numpy as np

#: Prefix of every thread the streaming pipeline starts (inference, reading, decoding + writing).
WORKER_PREFIX = "segdeploy-"


def calls_in_flight(runtime) -> int:
    """How many ``run`` calls ``runtime`` takes at once (its ``concurrent_calls``; 1 when it does not
    say): what the pipeline, the timers and the server keep in flight for it."""
    return max(1, int(getattr(runtime, "concurrent_calls", 1) or 1))


class InferenceThreads:
    """Runs the runtime in ``count`` daemon threads, so that the caller waits interruptibly.

    A forward pass inside a C++ kernel does not return to Python for seconds; a Ctrl-C then reaches
    the waiting main thread at once (lock waits are interruptible). The CLI then gives the threads a
    moment (:func:`wait_for_workers`) and leaves with ``os._exit`` rather than tearing the runtime
    down under a running kernel (segdeploy.cli.main). With one thread the runtime is called one
    call at a time; with ``count`` > 1 (a runtime whose ``concurrent_calls`` says it takes that
    many at once, e.g. OpenVINO streams) up to ``count`` calls run together.
    """

    def __init__(self, count: int = 1) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._count = max(1, count)

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            future, fn, args = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # handed to the waiting thread
                    future.set_exception(exc)

    def submit(self, fn, *args) -> Future:
        if not self._threads:
            for i in range(self._count):
                thread = threading.Thread(target=self._loop, name=f"segdeploy-infer{i}", daemon=True)
                thread.start()
                self._threads.append(thread)
        future: Future = Future()
        self._queue.put((future, fn, args))
        return future

    def call(self, fn, *args):
        return self.submit(fn, *args).result()

    def close(self, cancel: bool = False) -> None:
        """Let the threads end; with ``cancel``, calls not yet started are cancelled, not run."""
        if cancel:
            while True:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job[0].cancel()
        for _ in self._threads:
            self._queue.put(None)


def split_forward(runtime, threads: InferenceThreads, on_part: Callable[[float], None] | None = None):
    """A ``forward(batch)`` for a caller holding one large batch (a test-time protocol's views of
    one image), run on ``threads`` (the caller waits interruptibly).

    A runtime taking several calls at once gets one call per item, queued over its streams, and the
    outputs are joined back in order. Why: one call is one OpenVINO infer request, which runs on one
    stream; with one stream per core the 8 views of a wseg image in one call kept one core of two
    busy (one image 396 s end to end; 217 s with the views spread, benchmarks/results/durations_cpu.md).
    A runtime taking one call at a time gets the whole batch in one call, as before.
    ``on_part(fraction)`` is called as each call ends, with its share of the batch (a progress bar
    that moves during a minutes-long image).
    """
    one_item_per_call = calls_in_flight(runtime) > 1

    def forward(batch: np.ndarray) -> list[np.ndarray]:
        size = 1 if one_item_per_call else len(batch)
        starts = range(0, len(batch), size)
        futures = [threads.submit(runtime.run, batch[start:start + size]) for start in starts]
        results = []
        for start, future in zip(starts, futures):
            results.append(future.result())
            if on_part is not None:
                on_part(min(size, len(batch) - start) / len(batch))
        if len(results) == 1:
            return results[0]
        return [np.concatenate([result[k] for result in results]) for k in range(len(results[0]))]

    return forward


def busy_workers() -> list[threading.Thread]:
    """segdeploy's worker threads still alive (a forward pass, a decode or a write in progress)."""
    return [t for t in threading.enumerate()
            if t.name.startswith(WORKER_PREFIX) and t.is_alive() and t is not threading.current_thread()]


def wait_for_workers(grace: float) -> bool:
    """Wait up to ``grace`` seconds for the worker threads to end; True when none is left.

    After Ctrl-C the pipeline queues no new work, so each thread ends once its current call returns:
    a forward pass of a small model, one decode, one atomic write.
    """
    deadline = time.monotonic() + grace
    for thread in busy_workers():
        thread.join(max(0.0, deadline - time.monotonic()))
    return not busy_workers()


__all__ = ["InferenceThreads", "busy_workers", "calls_in_flight", "split_forward", "wait_for_workers"]
