"""Pipeline speed features: only the decoded output leaves the runtime; five stage timers."""

from __future__ import annotations

import numpy as np

from segdeploy.core.registry import get_spec
from segdeploy.engine.pipeline import StageTimes, StreamOptions, stream_predictions
from segdeploy.engine.transforms import preprocess

SPEC = get_spec("u2netp")


class SelectingRuntime:
    def __init__(self):
        self.asked = []

    def run(self, batch, outputs=None):
        self.asked.append(outputs)
        n = batch.shape[0]
        every = [np.full((n, 1, 320, 320), float(k), np.float32) for k in range(7)]
        return every if outputs is None else [every[i] for i in outputs]


class PlainRuntime:
    def __init__(self):
        self.calls = 0

    def run(self, batch):
        self.calls += 1
        return [np.zeros((batch.shape[0], 1, 320, 320), np.float32)] * 7


def _images(n):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(n)]


def test_pipeline_asks_only_for_the_output_decoding_reads_and_times_five_stages():
    rt = SelectingRuntime()
    times = StageTimes()
    written = []
    outcomes = list(
        stream_predictions(
            _images(5),
            lambda im: im,
            rt,
            SPEC,
            options=StreamOptions(batch_size=2),
            times=times,
            sink=lambda item, image, pred: written.append(pred.mask.shape),
        )
    )
    assert all(o.ok for o in outcomes) and len(written) == 5
    assert rt.asked == [(0,)] * 3  # batches of 2, 2, 1
    stages = times.to_dict()
    for key in ("read_s", "preprocess_s", "infer_s", "decode_s", "write_s"):
        assert key in stages and stages[key] >= 0
    assert times.preprocess > 0 and times.decode > 0 and times.write > 0


def test_a_runtime_without_output_selection_still_works():
    rt = PlainRuntime()
    outcomes = list(stream_predictions(_images(2), lambda im: im, rt, SPEC, options=StreamOptions(batch_size=2)))
    assert all(o.ok for o in outcomes) and rt.calls == 1


def test_preprocessing_is_float32_end_to_end():
    x = preprocess(_images(1)[0], SPEC)
    assert x.dtype == np.float32 and x.shape == (3, 320, 320)
