"""The streaming loop shared by predict, eval and the end-to-end benchmark.

read + preprocess (thread pool) → batcher (consecutive items of one input size) → runtime →
decode + sink (thread pool) → outcomes yielded in input order.

Stages overlap through bounded look-ahead, so the runtime does not wait for JPEG decoding while
CPU threads are free. An item that cannot be read becomes an Outcome with its error; a batch that
fails in the runtime is retried one item at a time, so one bad input never loses the rest.

This module owns the flow (look-ahead, batching, the output order, early exit) and the per-item
work of the thread pools; the held state (prepared items, the memory budget, the batcher) lives in
:mod:`segdeploy.engine.stream_parts`, the runtime calls in :mod:`segdeploy.engine.stream_runtime`.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

import numpy as np

from segdeploy.core.specs import ModelSpec
from segdeploy.engine.images import LARGE_IMAGE_PIXELS, LoadedImage, return_freed_memory
from segdeploy.engine.stream_parts import Batcher, MemoryBudget, Prepared
from segdeploy.engine.stream_runtime import BatchRunner, is_out_of_memory, is_sticky_device_error
from segdeploy.engine.transforms import (InputPolicy, Prediction, decode, prediction_from_8bit_map,
                                        preprocess_with_valid)

T = TypeVar("T")


@dataclass
class Outcome(Generic[T]):
    """What became of one input item.

    Attributes:
        item: the input as given (a path, a Sample, ...).
        prediction: the decoded output, or None when the item failed.
        error: why the item failed (None on success).
        image: the RGB image as read (kept only when ``keep_images`` is set).
        sink_result: what the ``sink`` callback returned for this item.
        stage: where the item failed: "read" (the input could not be read or preprocessed: the
            input's fault), "infer" (the runtime raised) or "decode" (decoding or the sink raised);
            None on success.
        outputs: the network's raw outputs for this item (no batch axis), kept only when
            ``keep_outputs`` is set (fidelity comparisons need them).
    """

    item: T
    prediction: Prediction | None = None
    error: BaseException | None = None
    image: np.ndarray | None = None
    sink_result: Any = None
    stage: str | None = None
    outputs: list[np.ndarray] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class StageTimes:
    """Seconds spent in each stage, summed over worker threads (they overlap in wall time).

    read: file read + image decode; preprocess: resize + normalise; infer: ``runtime.run``;
    decode: network output -> prediction at the original size; write: the sink (e.g. PNG encode
    + atomic write).
    """

    read: float = 0.0
    infer: float = 0.0
    decode: float = 0.0
    preprocess: float = 0.0
    write: float = 0.0
    wall: float = 0.0
    items: int = 0
    failed: int = 0
    batches: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, stage: str, seconds: float) -> None:
        """Add seconds to a stage; called from worker threads, so the read-modify-write is locked."""
        with self._lock:
            setattr(self, stage, getattr(self, stage) + seconds)

    def to_dict(self) -> dict:
        return {
            "read_s": round(self.read, 4), "preprocess_s": round(self.preprocess, 4),
            "infer_s": round(self.infer, 4), "decode_s": round(self.decode, 4), "write_s": round(self.write, 4),
            "wall_s": round(self.wall, 4), "items": self.items, "failed": self.failed, "batches": self.batches,
            "images_per_s": round(self.items / self.wall, 3) if self.wall > 0 else None,
            "note": "read/preprocess/infer/decode/write are summed over threads and overlap; wall is end to end",
        }


#: Default bound on the decoded pixels and network inputs that readers, the batcher and the writers
#: hold at once (bytes). Look-ahead stops while this much is held, and a batch is sent early when it
#: alone holds half of it, so a huge --batch-size or huge images cannot exhaust memory.
DEFAULT_MEMORY_BUDGET = 1 << 30


@dataclass(frozen=True)
class StreamOptions:
    """How :func:`stream_predictions` runs.

    Attributes:
        batch_size: the largest batch given to the runtime; consecutive items whose network inputs
            differ in size go to separate batches; a batch is also sent once it holds half of
            ``memory_budget``.
        workers: threads for reading/preprocessing and for decoding/sinking (default: CPU count, ≤ 8).
        max_side: input policy (:class:`~segdeploy.engine.transforms.InputPolicy`): "spec" = the
            model's ``max_input_side``; 0/None = native resolution; N = longest side N.
        memory_budget: bytes of decoded images and network inputs held at once (None = unbounded).
        prefetch: how many items may be read ahead of the runtime (default 4 × batch, ≥ 2 × workers,
            at most 64), further limited by ``memory_budget``.
        keep_images: keep the (working) RGB image on each Outcome.
        keep_outputs: keep each item's raw network outputs on its Outcome (``outputs``).
    """

    batch_size: int = 1
    workers: int | None = None
    max_side: int | None | str = "spec"
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET
    prefetch: int | None = None
    keep_images: bool = False
    keep_outputs: bool = False


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2)))


def _copy_future(source: Future, target: Future) -> None:
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())
    else:
        target.set_result(source.result())


class _ItemWork:
    """What the thread pools do to one item: read + preprocess before the runtime, decode + sink after.

    Both run in worker threads and time themselves into ``times``; a failure becomes the item's own
    (a :class:`Prepared` error or a failed :class:`Outcome`), never the run's.
    """

    def __init__(self, read: Callable, sink: Callable | None, spec: ModelSpec, policy: InputPolicy,
                 options: StreamOptions, device_mode: str | None, times: StageTimes, budget: MemoryBudget,
                 abandoned: threading.Event) -> None:
        self.read, self.sink, self.spec, self.policy = read, sink, spec, policy
        self.keep_images, self.keep_outputs = options.keep_images, options.keep_outputs
        self.device_mode, self.times, self.budget, self.abandoned = device_mode, times, budget, abandoned

    def prepare(self, item) -> Prepared:
        """Read ``item`` and make its network input (or keep the photo, for device preprocessing)."""
        t0 = time.perf_counter()
        stage = "read"
        try:
            loaded = self.read(item)
            t1 = time.perf_counter()
            self.times.add("read", t1 - t0)
            t0, stage = t1, "preprocess"
            if isinstance(loaded, LoadedImage):
                image, original = loaded.pixels, tuple(loaded.original_hw)
                image, _ = self.policy.reduce_array(image)
            else:
                image, original = self.policy.reduce_array(loaded)
            if self.device_mode:
                prep = Prepared(item, image, image, None, original)
            else:
                array, valid = preprocess_with_valid(image, self.spec)
                prep = Prepared(item, image, array, valid, original)
            if original[0] * original[1] > LARGE_IMAGE_PIXELS:
                return_freed_memory()  # the decoder's strips, before the mask at full size is made
            self.budget.take(prep.nbytes)
            return prep
        except Exception as exc:  # reported per item, never fatal for the run
            return Prepared(item, error=exc)
        finally:
            self.times.add(stage, time.perf_counter() - t0)

    def finish(self, prep: Prepared, outputs: list[np.ndarray]) -> Outcome:
        """Decode an inferred item at its original size and hand it to the sink; frees its budget."""
        t0 = time.perf_counter()
        stage = "decode"
        try:
            if prep.device_mask is not None:
                pred = prediction_from_8bit_map(prep.device_mask)
            else:
                pred = decode(outputs, self.spec, prep.original_hw, prep.valid_hw)
            t1 = time.perf_counter()
            self.times.add("decode", t1 - t0)
            t0, stage = t1, "write"
            if prep.original_hw[0] * prep.original_hw[1] > LARGE_IMAGE_PIXELS:
                return_freed_memory()  # the decode's float maps, before the writer encodes the mask
            if self.abandoned.is_set():  # interrupted: write nothing the manifest will not know of
                raise RuntimeError("run interrupted before this output was written")
            result = self.sink(prep.item, prep.image, pred) if self.sink is not None else None
            return Outcome(prep.item, pred, None, prep.image if self.keep_images else None, result,
                           outputs=outputs if self.keep_outputs else None)
        except Exception as exc:
            return Outcome(prep.item, None, exc, prep.image if self.keep_images else None, stage="decode")
        finally:
            self.budget.release(prep.nbytes)
            self.times.add(stage, time.perf_counter() - t0)


class _Stream:
    """One run of :func:`stream_predictions`.

    The consuming thread reads ahead through ``readers`` (bounded by ``prefetch`` and the memory
    budget), batches, hands each batch to the runtime and yields from ``pending``: one slot per
    item in input order, a finished Outcome or the Future of its decode in ``decoders``.
    """

    def __init__(self, items: Iterable, read: Callable, runtime, spec: ModelSpec, options: StreamOptions,
                 sink: Callable | None, times: StageTimes | None) -> None:
        if options.batch_size < 1:
            raise ValueError("batch_size must be ≥ 1")
        self.workers = options.workers or default_workers()
        # At least two batches read ahead, so that a GPU batch never waits for the photos of the next one.
        self.prefetch = options.prefetch or max(2 * options.batch_size,
                                                min(64, max(4 * options.batch_size, 2 * self.workers)))
        self.times = times if times is not None else StageTimes()
        policy = InputPolicy.for_model(spec, options.max_side)
        self.budget = MemoryBudget(options.memory_budget)
        self.start = time.perf_counter()
        self.abandoned = threading.Event()  # set when the consumer stops early (Ctrl-C, an error, close())
        self.runner = BatchRunner(runtime, spec, options.keep_outputs, self.times)
        self.work = _ItemWork(read, sink, spec, policy, options, self.runner.device_mode, self.times, self.budget,
                              self.abandoned)
        self.batcher = Batcher(options.batch_size, self.budget)
        self.keep_images = options.keep_images
        self.items = iter(items)
        self.readers = ThreadPoolExecutor(self.workers, thread_name_prefix="segdeploy-read")
        self.decoders = ThreadPoolExecutor(self.workers, thread_name_prefix="segdeploy-decode")
        self.reading: deque[Future] = deque()  # reads in input order
        self.exhausted = False  # no item is left to read
        self.pending: deque[Future | Outcome] = deque()
        self.in_flight: list[Future] = []  # batches in inference threads, for a runtime taking several calls

    def run(self) -> Iterator[Outcome]:
        """Yield every item's outcome in input order; leaving early stops the pools and the runtime."""
        completed = False
        try:
            self._refill()
            while self.reading:
                prep = self.reading.popleft().result()
                self._refill()
                self._route(prep)
                yield from self._drain(block_until=2 * self.prefetch)
            self._send(self.batcher.take())
            yield from self._drain(block_until=0)
            completed = True
        finally:
            self._close(completed)
        self.times.wall = time.perf_counter() - self.start

    def _refill(self) -> None:
        """Start reads up to ``prefetch`` ahead, while the memory budget has room for them."""
        while not self.exhausted and len(self.reading) < self.prefetch:
            if self.reading and not self.budget.allows_read(self.reading, self.workers):
                return
            try:
                item = next(self.items)
            except StopIteration:
                self.exhausted = True
                return
            self.reading.append(self.readers.submit(self.work.prepare, item))

    def _route(self, prep: Prepared) -> None:
        """Batch a readable item; an unreadable one takes its place in the output order at once."""
        if prep.error is not None:
            self._send(self.batcher.take())  # keep input order: everything before the failed item goes first
            self.pending.append(Outcome(prep.item, None, prep.error, stage="read"))
            return
        for batch in self.batcher.add(prep):
            self._send(batch)

    def _send(self, batch: list[Prepared]) -> None:
        """Run ``batch`` and queue its items' output slots (nothing for an empty batch)."""
        if not batch:
            return
        if self.runner.concurrency == 1:
            for prep, result in self.runner.infer(batch):
                self.pending.append(self._settle(prep, result))
            return
        # Wait for a free call slot, then hand the batch over without waiting for it.
        while len(self.in_flight) >= self.runner.concurrency:
            wait(self.in_flight, return_when=FIRST_COMPLETED)
            self.in_flight[:] = [f for f in self.in_flight if not f.done()]
        slots = [Future() for _ in batch]
        self.pending.extend(slots)
        self.in_flight.append(self.runner.threads.submit(self._infer_in_flight, batch, slots))

    def _settle(self, prep: Prepared, result: list[np.ndarray] | BaseException) -> Future | Outcome:
        """The output slot of one inferred item: its failure, or its decode running."""
        if isinstance(result, BaseException):
            self.budget.release(prep.nbytes)
            return Outcome(prep.item, None, result, prep.image if self.keep_images else None, stage="infer")
        return self.decoders.submit(self.work.finish, prep, result)

    def _infer_in_flight(self, batch: list[Prepared], slots: list[Future]) -> None:
        """Runs in an inference thread: infer ``batch``, then fill each item's slot from its decode."""
        try:
            for (prep, result), slot in zip(self.runner.infer(batch, self.runner.run_direct), slots):
                done = self._settle(prep, result)
                if isinstance(done, Outcome):
                    slot.set_result(done)
                else:
                    done.add_done_callback(lambda f, slot=slot: _copy_future(f, slot))
        except BaseException as exc:  # a sticky device error, or the run was abandoned
            for slot in slots:
                if not slot.done():
                    slot.set_exception(exc)

    def _drain(self, block_until: int) -> Iterator[Outcome]:
        """Yield finished outcomes from the front of ``pending``.

        Blocks while more than ``block_until`` slots wait, or while finished-but-unwritten items hold
        more than the memory budget.
        """
        while self.pending:
            head = self.pending[0]
            if isinstance(head, Future):
                over = self.budget.over()
                if not head.done() and len(self.pending) <= block_until and not over:
                    return
                head = head.result()
            self.pending.popleft()
            self.times.items += 1
            self.times.failed += 0 if head.ok else 1
            self.times.wall = time.perf_counter() - self.start
            yield head

    def _close(self, completed: bool) -> None:
        """Shut the pools and the inference threads down; after an early exit, without queued work."""
        if not completed:
            self.abandoned.set()
        self.runner.threads.close(cancel=not completed)
        # On Ctrl-C or an abandoned generator: drop queued reads and decodes; the writes already
        # under way get a moment to land, so that the caller can count them (see adopt_written).
        self.readers.shutdown(wait=completed, cancel_futures=not completed)
        self.decoders.shutdown(wait=completed, cancel_futures=not completed)
        if not completed:
            wait([f for f in self.pending if isinstance(f, Future)], timeout=0.3)


def stream_predictions(
    items: Iterable[T],
    read: Callable[[T], Any],
    runtime,
    spec: ModelSpec,
    options: StreamOptions | None = None,
    *,
    sink: Callable[[T, np.ndarray, Prediction], Any] | None = None,
    times: StageTimes | None = None,
) -> Iterator[Outcome[T]]:
    """Run ``runtime`` over ``items`` and yield one :class:`Outcome` per item, in input order.

    Args:
        items: anything; ``read(item)`` must return an RGB uint8 HxWx3 image, or a
            :class:`~segdeploy.engine.images.LoadedImage` (pixels possibly reduced + original size),
            or raise.
        runtime: object with ``run(batch NCHW float32) -> list of batch-first arrays``.
        spec: the model's spec (preprocessing and decoding).
        options: batch size, threads, input policy and memory bound (:class:`StreamOptions`).
        sink: called in a decode thread as ``sink(item, image, prediction)`` (e.g. to write files);
            its return value lands in ``Outcome.sink_result``; an exception marks the item failed.
            ``image`` is the working copy (smaller than the original when the input policy reduced it;
            ``prediction`` is always at the original size).
        times: accumulates per-stage seconds.
    """
    # A generator throughout: nothing starts (not even the option checks) before the first item is asked for.
    yield from _Stream(items, read, runtime, spec, options or StreamOptions(), sink, times).run()


__all__ = ["DEFAULT_MEMORY_BUDGET", "Outcome", "StageTimes", "StreamOptions", "default_workers", "is_out_of_memory",
           "is_sticky_device_error", "stream_predictions"]
