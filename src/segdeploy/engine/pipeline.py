"""The streaming loop shared by predict, eval and the end-to-end benchmark.

read + preprocess (thread pool) → batcher (consecutive items of one input size) → runtime →
decode + sink (thread pool) → outcomes yielded in input order.

Stages overlap through bounded look-ahead, so the runtime does not wait for JPEG decoding while
CPU threads are free. An item that cannot be read becomes an Outcome with its error; a batch that
fails in the runtime is retried one item at a time, so one bad input never loses the rest.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

import numpy as np

from segdeploy.core.specs import ModelSpec
from segdeploy.engine.transforms import Prediction, decode, preprocess_with_valid

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
    """Seconds spent in each stage, summed over worker threads (they overlap in wall time)."""

    read: float = 0.0
    infer: float = 0.0
    decode: float = 0.0
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
            "read_s": round(self.read, 4), "infer_s": round(self.infer, 4), "decode_s": round(self.decode, 4),
            "wall_s": round(self.wall, 4), "items": self.items, "failed": self.failed, "batches": self.batches,
            "images_per_s": round(self.items / self.wall, 3) if self.wall > 0 else None,
            "note": "read/infer/decode are summed over threads and overlap; wall is end to end",
        }


@dataclass
class _Prepared:
    item: Any
    image: np.ndarray | None = None
    array: np.ndarray | None = None
    valid_hw: tuple[int, int] | None = None
    error: BaseException | None = None


#: messages of device errors that poison the CUDA context: every later call fails too, so retrying
#: item by item would only repeat the error for each remaining input
_STICKY_DEVICE_ERRORS = ("CUDA error", "device-side assert", "illegal memory access", "CUBLAS_STATUS_EXECUTION_FAILED",
                         "cudaErrorLaunchFailure", "unspecified launch failure")


def is_sticky_device_error(exc: BaseException) -> bool:
    """True for a device error after which the device cannot run anything (the run must stop)."""
    text = f"{type(exc).__name__}: {exc}"
    return any(marker in text for marker in _STICKY_DEVICE_ERRORS)


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2)))


def stream_predictions(
    items: Iterable[T],
    read: Callable[[T], np.ndarray],
    runtime,
    spec: ModelSpec,
    *,
    batch_size: int = 1,
    workers: int | None = None,
    prefetch: int | None = None,
    sink: Callable[[T, np.ndarray, Prediction], Any] | None = None,
    keep_images: bool = False,
    times: StageTimes | None = None,
    keep_outputs: bool = False,
) -> Iterator[Outcome[T]]:
    """Run ``runtime`` over ``items`` and yield one :class:`Outcome` per item, in input order.

    Args:
        items: anything; ``read(item)`` must return an RGB uint8 HxWx3 image or raise.
        runtime: object with ``run(batch NCHW float32) -> list of batch-first arrays``.
        spec: the model's spec (preprocessing and decoding).
        batch_size: the largest batch given to the runtime; consecutive items whose network inputs
            differ in size go to separate batches.
        workers: threads for reading/preprocessing and for decoding/sinking (default: CPU count, ≤ 8).
        prefetch: how many items may be read ahead of the runtime (default 4 × batch, ≥ 2 × workers).
        sink: called in a decode thread as ``sink(item, image, prediction)`` (e.g. to write files);
            its return value lands in ``Outcome.sink_result``; an exception marks the item failed.
        keep_images: keep the decoded RGB image on the Outcome.
        times: accumulates per-stage seconds.
        keep_outputs: keep each item's raw network outputs on its Outcome (``outputs``).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be ≥ 1")
    workers = workers or default_workers()
    prefetch = prefetch or max(4 * batch_size, 2 * workers)
    times = times if times is not None else StageTimes()
    start = time.perf_counter()

    def prepare(item) -> _Prepared:
        t0 = time.perf_counter()
        try:
            image = read(item)
            array, valid = preprocess_with_valid(image, spec)
            return _Prepared(item, image, array, valid)
        except Exception as exc:  # reported per item, never fatal for the run
            return _Prepared(item, error=exc)
        finally:
            times.add("read", time.perf_counter() - t0)

    def finish(prep: _Prepared, outputs: list[np.ndarray]) -> Outcome:
        t0 = time.perf_counter()
        try:
            pred = decode(outputs, spec, prep.image.shape[:2], prep.valid_hw)
            result = sink(prep.item, prep.image, pred) if sink is not None else None
            return Outcome(prep.item, pred, None, prep.image if keep_images else None, result,
                           outputs=outputs if keep_outputs else None)
        except Exception as exc:
            return Outcome(prep.item, None, exc, prep.image if keep_images else None, stage="decode")
        finally:
            times.add("decode", time.perf_counter() - t0)

    def infer(batch: list[_Prepared]) -> list[tuple[_Prepared, list[np.ndarray] | BaseException]]:
        t0 = time.perf_counter()
        try:
            outputs = runtime.run(np.stack([p.array for p in batch]))
            times.batches += 1
            times.batch_sizes.append(len(batch))
            return [(p, [np.asarray(o[i]) for o in outputs]) for i, p in enumerate(batch)]
        except Exception as exc:
            if is_sticky_device_error(exc):
                from segdeploy.core.errors import InferenceError

                raise InferenceError(f"the device failed and cannot run further inputs ({exc}); "
                                     "the run stopped") from exc
            if len(batch) == 1:
                return [(batch[0], exc)]
        finally:
            times.infer += time.perf_counter() - t0
        # The batch failed as a whole: isolate the item(s) at fault by running them one by one.
        results = []
        for p in batch:
            results.extend(infer([p]))
        return results

    item_iter = iter(items)
    with ThreadPoolExecutor(workers, thread_name_prefix="segdeploy-read") as readers, \
            ThreadPoolExecutor(workers, thread_name_prefix="segdeploy-decode") as decoders:
        reading: deque[Future] = deque()
        # Output slots in input order: a Future (decode running) or a finished Outcome.
        pending: deque[Future | Outcome] = deque()
        batch: list[_Prepared] = []
        exhausted = False

        def refill() -> None:
            nonlocal exhausted
            while not exhausted and len(reading) < prefetch:
                try:
                    item = next(item_iter)
                except StopIteration:
                    exhausted = True
                    return
                reading.append(readers.submit(prepare, item))

        def flush() -> None:
            if not batch:
                return
            for prep, result in infer(batch):
                if isinstance(result, BaseException):
                    pending.append(Outcome(prep.item, None, result, prep.image if keep_images else None,
                                           stage="infer"))
                else:
                    pending.append(decoders.submit(finish, prep, result))
            batch.clear()

        def drain(block_until: int) -> Iterator[Outcome]:
            # Yield finished outcomes from the front; block while more than `block_until` wait.
            while pending:
                head = pending[0]
                if isinstance(head, Future):
                    if not head.done() and len(pending) <= block_until:
                        return
                    head = head.result()
                pending.popleft()
                times.items += 1
                times.failed += 0 if head.ok else 1
                times.wall = time.perf_counter() - start
                yield head

        refill()
        while reading:
            prep = reading.popleft().result()
            refill()
            if prep.error is not None:
                flush()  # keep input order: everything before the failed item goes first
                pending.append(Outcome(prep.item, None, prep.error, stage="read"))
            else:
                if batch and batch[0].array.shape != prep.array.shape:
                    flush()
                batch.append(prep)
                if len(batch) >= batch_size:
                    flush()
            yield from drain(block_until=2 * prefetch)
        flush()
        yield from drain(block_until=0)
    times.wall = time.perf_counter() - start
