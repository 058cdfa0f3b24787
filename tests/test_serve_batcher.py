"""DynamicBatcher on its own: which forward passes it forms from requests that wait together.

The runtime is a numpy stand-in that records the batches it is given; each item's answer is its
own input times two, so a result that reached the wrong request shows.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from segdeploy.serve.batcher import DynamicBatcher, batch_sizes


class RecordingRuntime:
    def __init__(self):
        self.batches: list[tuple[int, tuple[int, ...]]] = []
        self.gate = threading.Event()
        self.gate.set()

    def run(self, batch):
        self.gate.wait(30)
        self.batches.append((len(batch), tuple(batch.shape[1:])))
        return [batch * 2.0]


def item(value: float, shape=(1, 4, 4)) -> np.ndarray:
    return np.full(shape, value, dtype=np.float32)


def serve(runtime, arrays, **settings):
    """Submit ``arrays`` while the runtime is held, release it, return the results in order."""

    async def main():
        batcher = DynamicBatcher([runtime], max_wait_ms=5, **settings)
        batcher.start()
        runtime.gate.clear()
        first = batcher.submit(item(-1.0, arrays[0].shape))  # occupies the worker
        while not batcher._running:
            await asyncio.sleep(0.001)
        futures = [batcher.submit(a) for a in arrays]
        runtime.gate.set()
        results = await asyncio.gather(first, *futures)
        await batcher.stop()
        return results[1:]

    return asyncio.run(main())


@pytest.mark.parametrize("max_batch, expected", [(1, [1]), (2, [1, 2]), (3, [1, 2, 3]), (6, [1, 2, 4, 6]),
                                                 (8, [1, 2, 4, 8]), (16, [1, 2, 4, 8, 16])])
def test_batch_sizes_are_powers_of_two_and_the_maximum(max_batch, expected):
    assert batch_sizes(max_batch) == expected


def test_waiting_requests_run_in_batch_sizes_the_engine_compiled():
    runtime = RecordingRuntime()
    arrays = [item(float(i)) for i in range(7)]
    results = serve(runtime, arrays, max_batch_size=8)
    # the held first request, then 7 waiting: 4 + 2 + 1 (never 7, 3 or 5)
    assert [size for size, _ in runtime.batches] == [1, 4, 2, 1]
    for value, result in enumerate(results):
        assert np.array_equal(result.outputs[0], item(2.0 * value))
    assert [r.batch_size for r in results] == [4, 4, 4, 4, 2, 2, 1]


def test_any_size_runs_when_bucketing_is_off():
    runtime = RecordingRuntime()
    serve(runtime, [item(float(i)) for i in range(7)], max_batch_size=8, bucketed=False)
    assert [size for size, _ in runtime.batches] == [1, 7]


def test_items_of_another_shape_wait_for_a_batch_of_their_own():
    runtime = RecordingRuntime()
    small, large = (1, 4, 4), (1, 6, 6)
    arrays = [item(0, small), item(1, large), item(2, small), item(3, large), item(4, small)]
    results = serve(runtime, arrays, max_batch_size=4)
    assert runtime.batches[1:] == [(2, small), (1, small), (2, large)]
    for value, (array, result) in enumerate(zip(arrays, results)):
        assert np.array_equal(result.outputs[0], array * 2.0), value
