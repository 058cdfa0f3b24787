import numpy as np
import pytest

from segdeploy import get_spec
from segdeploy.engine.pipeline import StageTimes, StreamOptions, stream_predictions
from tests.image_zoo import photo


class FakeSaliencyRuntime:
    """Returns a per-image constant map tagged by the image mean; fails on batches containing NaN."""

    def __init__(self):
        self.batch_sizes = []

    def run(self, batch):
        self.batch_sizes.append(len(batch))
        if np.isnan(batch).any():
            raise RuntimeError("NaN in batch")
        d0 = batch[:, :1] * 0.0 + batch.mean(axis=(1, 2, 3), keepdims=True)
        d0[:, :, 0, 0] += 1.0  # non-constant so min-max normalisation is defined
        return [d0] + [np.zeros_like(d0)] * 6


def read(i):
    if i == 3:
        raise ValueError("unreadable #3")
    if i == 6:
        return np.full((10, 12, 3), 255, np.uint8)
    return photo(20 + (i % 2), 24, seed=i)


def test_order_errors_and_batching():
    runtime, times = FakeSaliencyRuntime(), StageTimes()
    outs = list(
        stream_predictions(
            range(9), read, runtime, get_spec("u2netp"), options=StreamOptions(batch_size=4, workers=2), times=times
        )
    )
    assert [o.item for o in outs] == list(range(9))
    assert [o.ok for o in outs] == [i != 3 for i in range(9)]
    assert "unreadable #3" in str(outs[3].error)
    assert outs[6].prediction.mask.shape == (10, 12) and outs[1].prediction.mask.shape == (21, 24)
    assert sum(runtime.batch_sizes) == 8 and max(runtime.batch_sizes) <= 4
    assert times.items == 9 and times.failed == 1 and sum(times.batch_sizes) == 8


def test_native_size_model_batches_only_equal_shapes():
    seen = []

    class Rt:
        def run(self, batch):
            seen.append(batch.shape)
            n, _, h, w = batch.shape
            return [np.zeros((n, 20), np.float32), np.full((n, 21, h, w), 1 / 21, np.float32)]

    sizes = [(16, 16), (16, 16), (24, 16), (16, 16)]
    outs = list(
        stream_predictions(sizes, lambda s: photo(*s), Rt(), get_spec("wseg_voc"), options=StreamOptions(batch_size=8))
    )
    assert all(o.ok for o in outs)
    assert [s[0] for s in seen] == [2, 1, 1]


def test_failing_batch_is_retried_item_by_item():
    """A batch holding one poisoned input fails as a whole; only that item may be lost."""
    spec = get_spec("u2netp")
    runtime = FakeSaliencyRuntime()
    items = list(range(5))
    poisoned = {2}

    def run_poison(batch, _orig=runtime.run):
        if any(np.isclose(batch[k, 0, 0, 0], -999.0) for k in range(len(batch))):
            raise RuntimeError("poisoned item")
        return _orig(batch)

    runtime.run = run_poison

    import segdeploy.engine.pipeline as pipeline_module
    original = pipeline_module.preprocess_with_valid

    def tagged(image, spec_):
        array, valid = original(image, spec_)
        if image[0, 0, 0] == 7:
            array = array.copy()
            array[0, 0, 0] = -999.0
        return array, valid

    def read_tag(i):
        image = photo(20, 20, seed=i)
        image[0, 0, 0] = 7 if i in poisoned else 9
        return image

    pipeline_module.preprocess_with_valid = tagged
    try:
        outs = list(stream_predictions(items, read_tag, runtime, spec, options=StreamOptions(batch_size=5)))
    finally:
        pipeline_module.preprocess_with_valid = original
    assert [o.ok for o in outs] == [True, True, False, True, True]
    assert "poisoned item" in str(outs[2].error)


def test_sink_errors_mark_item_failed_and_results_are_kept():
    def sink(item, image, pred):
        if item == 1:
            raise OSError("disk full")
        return f"wrote {item}"

    outs = list(stream_predictions(range(3), lambda i: photo(16, 16, i), FakeSaliencyRuntime(), get_spec("u2netp"),
                                   sink=sink))
    assert [o.ok for o in outs] == [True, False, True]
    assert outs[0].sink_result == "wrote 0" and "disk full" in str(outs[1].error)


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError):
        list(
            stream_predictions(
                [1], read, FakeSaliencyRuntime(), get_spec("u2netp"), options=StreamOptions(batch_size=0)
            )
        )


def test_huge_batch_size_is_bounded_by_the_memory_budget():
    """--batch-size 100000: batches are sent once they hold half the budget; reading stops at the budget."""
    runtime = FakeSaliencyRuntime()
    per_item = 3 * 320 * 320 * 4 + 20 * 24 * 3  # network input + image
    budget = 6 * per_item
    outs = list(
        stream_predictions(
            range(30),
            lambda i: photo(20, 24, seed=i),
            runtime,
            get_spec("u2netp"),
            options=StreamOptions(batch_size=100_000, memory_budget=budget, workers=2),
        )
    )
    assert all(o.ok for o in outs) and len(outs) == 30
    assert sum(runtime.batch_sizes) == 30
    assert max(runtime.batch_sizes) <= 3  # 2 x batch bytes ≥ budget → sent; never waits for 100000


def test_reading_ahead_stops_at_the_budget():
    import threading

    held, peak, lock = [0], [0], threading.Lock()

    def read_counting(i):
        with lock:
            held[0] += 1
            peak[0] = max(peak[0], held[0])
        return photo(40, 40, seed=i)

    class Rt(FakeSaliencyRuntime):
        def run(self, batch):
            with lock:
                held[0] -= len(batch)
            return super().run(batch)

    per_item = 3 * 320 * 320 * 4 + 40 * 40 * 3
    list(
        stream_predictions(
            range(40),
            read_counting,
            Rt(),
            get_spec("u2netp"),
            options=StreamOptions(batch_size=1, workers=4, prefetch=32, memory_budget=3 * per_item),
        )
    )
    # at most the budget (3 items) plus the reads in flight when it was reached (≤ workers)
    assert peak[0] <= 3 + 4 + 1


def test_concurrent_runtime_keeps_calls_in_flight_and_order():
    """A runtime taking N calls at once gets N batches in flight; outcomes stay in input order and a
    failing read or batch loses only its own item."""
    import threading
    import time

    class Concurrent(FakeSaliencyRuntime):
        concurrent_calls = 3

        def __init__(self):
            super().__init__()
            self.active = self.peak = 0
            self.lock = threading.Lock()

        def run(self, batch):
            with self.lock:
                self.active += 1
                self.peak = max(self.peak, self.active)
            try:
                time.sleep(0.05)  # long enough for the pipeline to hand over the next batches
                return super().run(batch)
            finally:
                with self.lock:
                    self.active -= 1

    runtime, times = Concurrent(), StageTimes()
    outs = list(
        stream_predictions(
            range(12), read, runtime, get_spec("u2netp"), options=StreamOptions(batch_size=2, workers=2), times=times
        )
    )
    assert [o.item for o in outs] == list(range(12))
    assert [o.ok for o in outs] == [i != 3 for i in range(12)]
    assert runtime.peak >= 2 and runtime.peak <= 3
    assert times.items == 12 and times.failed == 1 and sum(times.batch_sizes) == 11
    # the same predictions as one call at a time
    serial = list(
        stream_predictions(
            range(12), read, FakeSaliencyRuntime(), get_spec("u2netp"), options=StreamOptions(batch_size=2)
        )
    )
    for a, b in zip(outs, serial):
        assert (a.prediction is None) == (b.prediction is None)
        if a.prediction is not None:
            assert np.array_equal(a.prediction.mask, b.prediction.mask)


def test_split_forward_runs_one_batch_as_concurrent_parts_in_order():
    """A test-time protocol's one batch of views runs one view per call, queued over the calls a
    runtime takes at once (every OpenVINO stream busy); the joined outputs equal one whole-batch
    call's, in order; a runtime taking one call at a time gets the whole batch."""
    import threading
    import time

    from segdeploy.engine.inference_threads import InferenceThreads, split_forward

    class Recording:
        def __init__(self, concurrent_calls):
            self.concurrent_calls = concurrent_calls
            self.sizes, self.active, self.peak = [], 0, 0
            self.lock = threading.Lock()

        def run(self, batch):
            with self.lock:
                self.sizes.append(len(batch))
                self.active += 1
                self.peak = max(self.peak, self.active)
            time.sleep(0.05)
            with self.lock:
                self.active -= 1
            return [batch.sum(axis=(1, 2, 3)), batch[:, :1] * 2.0]

    views = np.random.default_rng(0).random((8, 3, 4, 4), dtype=np.float32)
    whole = Recording(1).run(views)
    for calls, sizes, peak in ((2, [1] * 8, 2), (3, [1] * 8, 3), (1, [8], 1)):
        runtime, threads, shares = Recording(calls), InferenceThreads(calls), []
        try:
            outputs = split_forward(runtime, threads, on_part=shares.append)(views)
        finally:
            threads.close()
        assert runtime.sizes == sizes and runtime.peak == peak
        assert len(outputs) == 2 and all(np.array_equal(a, b) for a, b in zip(outputs, whole))
        assert sum(shares) == 1.0 and len(shares) == len(sizes)  # the bar moves per call, one image in all
