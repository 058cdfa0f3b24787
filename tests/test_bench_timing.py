"""Arithmetic of segdeploy.bench.timing and segdeploy.bench.flops, against hand-computed cases."""

import math

import numpy as np
import pytest

from segdeploy.bench.timing import LatencyStats, achieved_tflops, percentile, share_of_limit, throughput


def test_percentile_linear_interpolation_by_hand():
    samples = [4.0, 1.0, 3.0, 2.0]  # sorted: 1 2 3 4, n - 1 = 3
    assert percentile(samples, 0.0) == 1.0
    assert percentile(samples, 1.0) == 4.0
    assert percentile(samples, 0.5) == pytest.approx(2.5)  # h = 1.5
    assert percentile(samples, 0.9) == pytest.approx(3.7)  # h = 2.7 -> 3 + 0.7 * (4 - 3)
    assert percentile(samples, 0.99) == pytest.approx(3.97)  # h = 2.97
    assert percentile([7.0], 0.99) == 7.0


def test_percentile_matches_numpy_default_method():
    rng = np.random.default_rng(3)
    samples = rng.gamma(2.0, 3.0, size=37).tolist()
    for q in (0.1, 0.5, 0.9, 0.99):
        assert percentile(samples, q) == pytest.approx(np.percentile(samples, 100 * q, method="linear"))


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError):
        percentile([], 0.5)
    with pytest.raises(ValueError):
        percentile([1.0], 1.5)


def test_latency_stats_by_hand():
    stats = LatencyStats.from_seconds([0.004, 0.001, 0.003, 0.002])
    assert stats.count == 4
    assert (stats.min_ms, stats.max_ms) == pytest.approx((1.0, 4.0))
    assert stats.mean_ms == pytest.approx(2.5)
    assert stats.median_ms == pytest.approx(2.5)
    assert stats.p90_ms == pytest.approx(3.7)
    assert stats.p99_ms == pytest.approx(3.97)
    # sample variance: (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5 / 3
    assert stats.std_ms == pytest.approx(math.sqrt(5 / 3))
    assert LatencyStats.from_dict(stats.to_dict()) == stats
    single = LatencyStats.from_seconds([0.010])
    assert single.std_ms == 0.0 and single.p99_ms == pytest.approx(10.0)
    with pytest.raises(ValueError):
        LatencyStats.from_seconds([])


def test_throughput_and_compute_rate_by_hand():
    # 3 full batches of 8 and a last batch of 5 in 2.9 s: 29 images, not 4 x 8 = 32.
    assert throughput(8 + 8 + 8 + 5, 2.9) == pytest.approx(10.0)
    with pytest.raises(ValueError):
        throughput(5, 0.0)
    with pytest.raises(ValueError):
        throughput(-1, 1.0)
    # U2-Netp: 39.5 GFLOP/image at 1,000 images/s = 39.5 TFLOP/s; 5 % of a 790 TFLOP/s ceiling.
    assert achieved_tflops(39.5e9, 1000.0) == pytest.approx(39.5)
    assert share_of_limit(39.5, 790.0) == pytest.approx(0.05)
    assert achieved_tflops(None, 1000.0) is None
    assert share_of_limit(1.0, None) is None and share_of_limit(None, 1.0) is None and share_of_limit(1.0, 0) is None


class _Tiny:
    """conv 3->8 k3 p1; grouped conv 8->8 k3 s2 p1 groups 4; convT 8->2 k2 s2; linear 96->5."""

    @staticmethod
    def build():
        import torch.nn as nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 8, 3, padding=1)
                self.group = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4)
                self.bn = nn.BatchNorm2d(8)  # not counted
                self.up = nn.ConvTranspose2d(8, 2, 2, stride=2)
                self.fc = nn.Linear(96, 5)

            def forward(self, x):
                x = self.group(self.conv(x).relu())
                x = self.up(self.bn(x))
                return self.fc(x.flatten(1))

        return Net().eval()

    # input 3 x 5 x 7:
    #   conv:  output 8*5*7 = 280 elements x (3/1 * 3*3 = 27)            = 7,560
    #   group: output 8*3*4 =  96 elements x (8/4 * 3*3 = 18)            = 1,728
    #   convT: input  8*3*4 =  96 elements x (2/1 * 2*2 =  8)            =   768  (output 2 x 6 x 8)
    #   fc:    1 row x 96 x 5                                            =   480
    MACS = 7560 + 1728 + 768 + 480


@pytest.mark.parametrize("use_meta", [True, False])
@pytest.mark.parametrize("batch", [1, 3])
def test_flops_tiny_network_by_hand(use_meta, batch):
    pytest.importorskip("torch")
    from segdeploy.bench.flops import count_flops

    count = count_flops(_Tiny.build(), (5, 7), batch=batch, use_meta=use_meta)
    assert count.macs == _Tiny.MACS
    assert count.flops == 2 * _Tiny.MACS
    assert count.layers == 4
    assert count.by_type == {"Conv2d": 7560 + 1728, "ConvTranspose2d": 768, "Linear": 480}
    assert count.method == ("meta" if use_meta else "cpu")
    assert count.params == sum(p.numel() for p in _Tiny.build().parameters())


def test_flops_leave_module_untouched():
    torch = pytest.importorskip("torch")
    from segdeploy.bench.flops import count_flops

    net = _Tiny.build()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    count_flops(net, (5, 7))
    count_flops(net, (5, 7), use_meta=False)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.device.type == "cpu" for p in net.parameters()) and not net.training
    assert not net._forward_hooks and not net.conv._forward_hooks


@pytest.mark.parametrize("name, size, gflop", [
    ("u2netp", (320, 320), 39.5),          # docs/models.md §6
    ("unetpp_dsb2018", (96, 96), 9.7),
    ("unet_carvana", (512, 512), 385.4),
])
def test_flops_registry_models_match_docs_models_md(name, size, gflop):
    pytest.importorskip("torch")
    from segdeploy.bench.flops import flops_for_model
    from segdeploy.core.registry import get_spec

    get_spec(name)  # the model is registered (its module imported by the registry)
    count = flops_for_model(name, size)
    assert count.gflops == pytest.approx(gflop, rel=0.005)


def test_pure_timing_keeps_a_concurrent_runtimes_calls_in_flight():
    """A runtime with concurrent_calls=2 (OpenVINO streams) is timed with two calls at once: with
    20 ms calls the measured rate is about twice one caller's, and every call is counted once."""
    import threading
    import time

    from segdeploy.bench.pure import _timed_loop_concurrent

    active, peak, lock = [0], [0], threading.Lock()

    def call(i):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        with lock:
            active[0] -= 1
        return 1

    host, events, images, wall = _timed_loop_concurrent(call, 2, iters=10, duration=None)
    assert images == 10 and len(host) == 10 and events == [] and peak[0] == 2
    assert 0.09 < wall < 0.19  # 5 rounds of 20 ms, not 10
