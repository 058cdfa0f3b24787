"""What the streaming loop (:mod:`segdeploy.engine.pipeline`) holds between its stages.

A prepared item (pixels and network input of one input, or why it could not be read), the memory
budget that bounds how much of them is held at once, and the batcher that groups consecutive items
of one input size. None of them touches the runtime or a thread pool.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Collection

import numpy as np


@dataclass
class Prepared:
    """One input after read + preprocess: what the runtime and the decoder need, or its error."""

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


class MemoryBudget:
    """Bytes of prepared items held (read, batched or decoding) against an optional limit.

    Readers add what they prepared and decoders give it back, from worker threads, hence the lock;
    the loop only reads the totals, so a stale value there merely delays a decision by one step.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit if limit else None
        self.held = 0  # bytes of prepared items not yet finished
        self.largest = 0  # bytes of the largest prepared item so far
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> None:
        """Count a freshly prepared item."""
        with self._lock:
            self.held += nbytes
            self.largest = max(self.largest, nbytes)

    def release(self, nbytes: int) -> None:
        """Forget an item that was decoded, or failed in the runtime."""
        with self._lock:
            self.held -= nbytes

    def allows_read(self, reads: Collection[Future], workers: int) -> bool:
        """Whether one more read may start while ``reads`` (at least one) are queued or running.

        Held bytes plus the reads in flight count, each read guessed as large as the largest item
        so far; before the first item is known, one read per worker. Refusing always leaves at least
        one read in flight, so the loop never waits for nothing.
        """
        if self.limit is None:
            return True
        if self.largest == 0 and len(reads) >= workers:
            return False
        in_flight = sum(1 for f in reads if not f.done())
        return self.held + in_flight * self.largest < self.limit

    def batch_is_full(self, batch_bytes: int) -> bool:
        """True once a batch alone holds half the limit (it is then sent, whatever its size)."""
        return self.limit is not None and 2 * batch_bytes >= self.limit

    def over(self) -> bool:
        """True while more than the limit is held (the loop then waits for decodes to finish)."""
        return self.limit is not None and self.held > self.limit


class Batcher:
    """Groups consecutive prepared items whose network inputs have one shape.

    A batch is ready when it holds ``batch_size`` items, when it holds half the memory budget, or
    when the next item's input differs in shape (the runtime takes one shape per call).
    """

    def __init__(self, batch_size: int, budget: MemoryBudget) -> None:
        self.batch_size = batch_size
        self.budget = budget
        self._batch: list[Prepared] = []

    def add(self, prep: Prepared) -> list[list[Prepared]]:
        """Add a readable item; the batches that became ready, oldest first (none, one or two)."""
        ready = []
        if self._batch and self._batch[0].array.shape != prep.array.shape:
            ready.append(self.take())
        self._batch.append(prep)
        if len(self._batch) >= self.batch_size or self.budget.batch_is_full(sum(p.nbytes for p in self._batch)):
            ready.append(self.take())
        return ready

    def take(self) -> list[Prepared]:
        """The items gathered so far (possibly none), as a batch; the batcher starts empty again."""
        batch, self._batch = self._batch, []
        return batch


__all__ = ["Batcher", "MemoryBudget", "Prepared"]
