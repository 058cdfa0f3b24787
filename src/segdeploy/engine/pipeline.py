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
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

import numpy as np

from segdeploy.core.specs import ModelSpec
from segdeploy.engine.images import LARGE_IMAGE_PIXELS, LoadedImage, return_freed_memory
from segdeploy.engine.inference_threads import InferenceThreads, calls_in_flight
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


@dataclass
class _Prepared:
    item: Any
    image: np.ndarray | None = None
    array: np.ndarray | None = None
    valid_hw: tuple[int, int] | None = None
    original_hw: tuple[int, int] | None = None
    error: BaseException | None = None
    device_mask: np.ndarray | None = None  # the 8-bit mask, when the runtime decoded it on its device

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.image, self.array) if a is not None)


#: Default bound on the decoded pixels and network inputs that readers, the batcher and the writers
#: hold at once (bytes). Look-ahead stops while this much is held, and a batch is sent early when it
#: alone holds half of it, so a huge --batch-size or huge images cannot exhaust memory.
DEFAULT_MEMORY_BUDGET = 1 << 30


def _run_parameters(runtime) -> set[str]:
    """Parameter names of ``runtime.run`` (empty when they cannot be read)."""
    import inspect

    try:
        return set(inspect.signature(runtime.run).parameters)
    except (TypeError, ValueError):
        return set()


#: messages of device errors that poison the CUDA context: every later call fails too, so retrying
#: item by item would only repeat the error for each remaining input
_STICKY_DEVICE_ERRORS = ("CUDA error", "device-side assert", "illegal memory access", "CUBLAS_STATUS_EXECUTION_FAILED",
                         "cudaErrorLaunchFailure", "unspecified launch failure")


def is_sticky_device_error(exc: BaseException) -> bool:
    """True for a device error after which the device cannot run anything (the run must stop)."""
    text = f"{type(exc).__name__}: {exc}"
    return any(marker in text for marker in _STICKY_DEVICE_ERRORS)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a device (or host) allocation failure of the runtime."""
    text = f"{type(exc).__name__}: {exc}"
    return isinstance(exc, MemoryError) or "OutOfMemoryError" in text or "out of memory" in text.lower()


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2)))


def _copy_future(source: Future, target: Future) -> None:
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())
    else:
        target.set_result(source.result())


def stream_predictions(
    items: Iterable[T],
    read: Callable[[T], Any],
    runtime,
    spec: ModelSpec,
    *,
    batch_size: int = 1,
    workers: int | None = None,
    prefetch: int | None = None,
    sink: Callable[[T, np.ndarray, Prediction], Any] | None = None,
    keep_images: bool = False,
    times: StageTimes | None = None,
    max_side: int | None | str = "spec",
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
    keep_outputs: bool = False,
) -> Iterator[Outcome[T]]:
    """Run ``runtime`` over ``items`` and yield one :class:`Outcome` per item, in input order.

    Args:
        items: anything; ``read(item)`` must return an RGB uint8 HxWx3 image, or a
            :class:`~segdeploy.engine.images.LoadedImage` (pixels possibly reduced + original size),
            or raise.
        runtime: object with ``run(batch NCHW float32) -> list of batch-first arrays``.
        spec: the model's spec (preprocessing and decoding).
        batch_size: the largest batch given to the runtime; consecutive items whose network inputs
            differ in size go to separate batches; a batch is also sent once it holds half of
            ``memory_budget``.
        workers: threads for reading/preprocessing and for decoding/sinking (default: CPU count, ≤ 8).
        prefetch: how many items may be read ahead of the runtime (default 4 × batch, ≥ 2 × workers,
            at most 64), further limited by ``memory_budget``.
        sink: called in a decode thread as ``sink(item, image, prediction)`` (e.g. to write files);
            its return value lands in ``Outcome.sink_result``; an exception marks the item failed.
            ``image`` is the working copy (smaller than the original when the input policy reduced it;
            ``prediction`` is always at the original size).
        keep_images: keep the (working) RGB image on the Outcome.
        times: accumulates per-stage seconds.
        max_side: input policy (:class:`~segdeploy.engine.transforms.InputPolicy`): "spec" = the
            model's ``max_input_side``; 0/None = native resolution; N = longest side N.
        memory_budget: bytes of decoded images and network inputs held at once (None = unbounded).
        keep_outputs: keep each item's raw network outputs on its Outcome (``outputs``).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be ≥ 1")
    workers = workers or default_workers()
    # At least two batches read ahead, so that a GPU batch never waits for the photos of the next one.
    prefetch = prefetch or max(2 * batch_size, min(64, max(4 * batch_size, 2 * workers)))
    times = times if times is not None else StageTimes()
    policy = InputPolicy.for_model(spec, max_side)
    budget = memory_budget if memory_budget else None
    start = time.perf_counter()
    held = [0]  # bytes of prepared items not yet finished (read/batched/decoding)
    largest = [0]  # bytes of the largest prepared item so far
    held_lock = threading.Lock()
    abandoned = threading.Event()  # set when the consumer stops early (Ctrl-C, an error, close())

    def account(delta: int) -> None:
        with held_lock:
            held[0] += delta

    # Only the output decoding reads leaves the runtime, when it can be asked (Runtime.run(outputs=)).
    wanted = None
    if len(spec.output_names) > 1 and not keep_outputs and "outputs" in _run_parameters(runtime):
        wanted = (int(spec.decode.output_index),)

    # Runtimes that preprocess uint8 photos on their device (PyTorch on CUDA) get the photos as they
    # were decoded; "mask": they also return the 8-bit mask at the photo's size.
    device_mode = getattr(runtime, "device_preprocessing", lambda spec: None)(spec)
    if keep_outputs and device_mode == "mask":
        device_mode = "input"

    def prepare(item) -> _Prepared:
        t0 = time.perf_counter()
        stage = "read"
        try:
            loaded = read(item)
            t1 = time.perf_counter()
            times.add("read", t1 - t0)
            t0, stage = t1, "preprocess"
            if isinstance(loaded, LoadedImage):
                image, original = loaded.pixels, tuple(loaded.original_hw)
                image, _ = policy.reduce_array(image)
            else:
                image, original = policy.reduce_array(loaded)
            if device_mode:
                prep = _Prepared(item, image, image, None, original)
            else:
                array, valid = preprocess_with_valid(image, spec)
                prep = _Prepared(item, image, array, valid, original)
            if original[0] * original[1] > LARGE_IMAGE_PIXELS:
                return_freed_memory()  # the decoder's strips, before the mask at full size is made
            account(prep.nbytes)
            largest[0] = max(largest[0], prep.nbytes)
            return prep
        except Exception as exc:  # reported per item, never fatal for the run
            return _Prepared(item, error=exc)
        finally:
            times.add(stage, time.perf_counter() - t0)

    def finish(prep: _Prepared, outputs: list[np.ndarray]) -> Outcome:
        t0 = time.perf_counter()
        stage = "decode"
        try:
            if prep.device_mask is not None:
                pred = prediction_from_8bit_map(prep.device_mask)
            else:
                pred = decode(outputs, spec, prep.original_hw, prep.valid_hw)
            t1 = time.perf_counter()
            times.add("decode", t1 - t0)
            t0, stage = t1, "write"
            if prep.original_hw[0] * prep.original_hw[1] > LARGE_IMAGE_PIXELS:
                return_freed_memory()  # the decode's float maps, before the writer encodes the mask
            if abandoned.is_set():  # interrupted: write nothing the manifest will not know of
                raise RuntimeError("run interrupted before this output was written")
            result = sink(prep.item, prep.image, pred) if sink is not None else None
            return Outcome(prep.item, pred, None, prep.image if keep_images else None, result,
                           outputs=outputs if keep_outputs else None)
        except Exception as exc:
            return Outcome(prep.item, None, exc, prep.image if keep_images else None, stage="decode")
        finally:
            account(-prep.nbytes)
            times.add(stage, time.perf_counter() - t0)

    # Calls the runtime takes at once (OpenVINO streams): that many batches are kept in flight,
    # each decoded as soon as it returns; 1 = the classic one-batch-at-a-time loop.
    concurrency = calls_in_flight(runtime)
    inferrer = InferenceThreads(concurrency)

    def run_direct(x: np.ndarray, mask_hw: tuple[int, int] | None = None) -> list[np.ndarray]:
        if device_mode:
            return runtime.run_images(x, original_hw=mask_hw, outputs=wanted)
        return runtime.run(x) if wanted is None else runtime.run(x, outputs=wanted)

    def run_in_thread(x: np.ndarray, mask_hw: tuple[int, int] | None = None) -> list[np.ndarray]:
        return inferrer.call(run_direct, x, mask_hw)

    def infer(batch: list[_Prepared], run=run_in_thread) -> list[tuple[_Prepared, list[np.ndarray] | BaseException]]:
        t0 = time.perf_counter()
        # Masks come back decoded when every photo of the batch is at its original size.
        mask_hw = batch[0].original_hw if device_mode == "mask" and all(
            p.original_hw == p.image.shape[:2] for p in batch) else None
        try:
            outputs = run(np.stack([p.array for p in batch]), mask_hw)
            times.add("batches", 1)
            times.batch_sizes.append(len(batch))
            if mask_hw is not None:
                for i, p in enumerate(batch):
                    p.device_mask = outputs[0][i]
                return [(p, []) for p in batch]
            return [(p, [np.asarray(o[i]) for o in outputs]) for i, p in enumerate(batch)]
        except Exception as exc:
            if is_sticky_device_error(exc):
                from segdeploy.core.errors import InferenceError

                raise InferenceError(f"the device failed and cannot run further inputs ({exc}); "
                                     "the run stopped") from exc
            if len(batch) == 1:
                return [(batch[0], exc)]
        finally:
            times.add("infer", time.perf_counter() - t0)
        # The batch failed as a whole: isolate the item(s) at fault by running them one by one.
        results = []
        for p in batch:
            results.extend(infer([p], run))
        return results

    def settle(prep: _Prepared, result) -> Future | Outcome:
        """The output slot of one inferred item: its failure, or its decode running."""
        if isinstance(result, BaseException):
            account(-prep.nbytes)
            return Outcome(prep.item, None, result, prep.image if keep_images else None, stage="infer")
        return decoders.submit(finish, prep, result)

    def infer_in_flight(batch: list[_Prepared], slots: list[Future]) -> None:
        """Runs in an inference thread: infer ``batch``, then fill each item's slot from its decode."""
        try:
            for (prep, result), slot in zip(infer(batch, run_direct), slots):
                done = settle(prep, result)
                if isinstance(done, Outcome):
                    slot.set_result(done)
                else:
                    done.add_done_callback(lambda f, slot=slot: _copy_future(f, slot))
        except BaseException as exc:  # a sticky device error, or the run was abandoned
            for slot in slots:
                if not slot.done():
                    slot.set_exception(exc)

    item_iter = iter(items)
    readers = ThreadPoolExecutor(workers, thread_name_prefix="segdeploy-read")
    decoders = ThreadPoolExecutor(workers, thread_name_prefix="segdeploy-decode")
    completed = False
    # Output slots in input order: a Future (decode running) or a finished Outcome.
    pending: deque[Future | Outcome] = deque()
    try:
        reading: deque[Future] = deque()
        batch: list[_Prepared] = []
        exhausted = False

        def refill() -> None:
            nonlocal exhausted
            while not exhausted and len(reading) < prefetch:
                if reading and budget is not None:
                    # Held bytes plus the reads in flight, each guessed as large as the largest
                    # item so far (before the first one is known, one read per worker).
                    if largest[0] == 0 and len(reading) >= workers:
                        return
                    in_flight = sum(1 for f in reading if not f.done())
                    if held[0] + in_flight * largest[0] >= budget:
                        return  # enough pixels held; at least one read stays in flight
                try:
                    item = next(item_iter)
                except StopIteration:
                    exhausted = True
                    return
                reading.append(readers.submit(prepare, item))

        in_flight: list[Future] = []

        def flush() -> None:
            if not batch:
                return
            if concurrency == 1:
                for prep, result in infer(batch):
                    pending.append(settle(prep, result))
            else:
                # Wait for a free call slot, then hand the batch over without waiting for it.
                while len(in_flight) >= concurrency:
                    wait(in_flight, return_when=FIRST_COMPLETED)
                    in_flight[:] = [f for f in in_flight if not f.done()]
                slots = [Future() for _ in batch]
                pending.extend(slots)
                in_flight.append(inferrer.submit(infer_in_flight, list(batch), slots))
            batch.clear()

        def drain(block_until: int) -> Iterator[Outcome]:
            # Yield finished outcomes from the front; block while more than `block_until` wait, or
            # while finished-but-unwritten items hold more than the memory budget.
            while pending:
                head = pending[0]
                if isinstance(head, Future):
                    over = budget is not None and held[0] > budget
                    if not head.done() and len(pending) <= block_until and not over:
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
                batch_bytes = sum(p.nbytes for p in batch)
                if len(batch) >= batch_size or (budget is not None and 2 * batch_bytes >= budget):
                    flush()
            yield from drain(block_until=2 * prefetch)
        flush()
        yield from drain(block_until=0)
        completed = True
    finally:
        if not completed:
            abandoned.set()
        inferrer.close(cancel=not completed)
        # On Ctrl-C or an abandoned generator: drop queued reads and decodes; the writes already
        # under way get a moment to land, so that the caller can count them (see adopt_written).
        readers.shutdown(wait=completed, cancel_futures=not completed)
        decoders.shutdown(wait=completed, cancel_futures=not completed)
        if not completed:
            wait([f for f in pending if isinstance(f, Future)], timeout=0.3)
    times.wall = time.perf_counter() - start
