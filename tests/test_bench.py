"""segdeploy.bench.harness with fake runtimes: counting, inputs, end to end, renderings, CLI. No timed assertions."""

import csv
import io
import json
import sys
import types

import numpy as np
import pytest
from PIL import Image

from segdeploy.bench.harness import benchmark
from segdeploy.bench.options import BenchOptions
from segdeploy.bench.memory import host_peak_rss_bytes
from segdeploy.bench.pure import MIN_BUFFERS, make_inputs
from segdeploy.bench.records import BenchReport, load_report
from segdeploy.bench.render import plot_reports, render_csv, render_markdown
from tests.image_zoo import photo


class FakeRuntime:
    """Counts the rows it is given and remembers every input buffer it saw (by identity and content)."""

    name = "fake"

    def __init__(self, channels_out=1, short_by=0, precision="fp32"):
        self.rows = 0
        self.calls = 0
        self.warmups = []
        self.seen = []
        self.channels_out = channels_out
        self.short_by = short_by
        self.precision = precision

    def warmup(self, batch_shape):
        self.warmups.append(tuple(batch_shape))

    def run(self, batch):
        assert batch.dtype == np.float32 and batch.ndim == 4
        self.rows += batch.shape[0]
        self.calls += 1
        self.seen.append((id(batch), float(batch.std()), float(np.abs(batch).max())))
        n = batch.shape[0] - self.short_by
        return [np.ascontiguousarray(batch[:n, : self.channels_out])]

    def describe(self):
        return {"backend": "fake", "precision": self.precision, "provider": "numpy"}


def _run(runtime, **kw):
    kw.setdefault("count_flops", False)
    return benchmark("unetpp_dsb2018", BenchOptions(**kw), runtime=runtime)


def test_pure_mode_counts_images_actually_processed():
    fake = FakeRuntime()
    report = _run(fake, batch_sizes=[1, 3, 4], warmup=2, iters=5)
    assert [r.batch_size for r in report.results] == [1, 3, 4]
    for r in report.results:
        assert r.batches == r.latency.count == 5
        assert r.images == 5 * r.batch_size
        assert r.images_per_s == pytest.approx(r.images / r.wall_s)
        assert r.ms_per_image == pytest.approx(r.latency.median_ms / r.batch_size)
    # warm-up calls are not counted, but they did happen: (2 warm-up + 5 timed) calls per batch size
    assert fake.rows == sum(7 * b for b in (1, 3, 4))
    assert fake.warmups == [(1, 3, 96, 96), (3, 3, 96, 96), (4, 3, 96, 96)]
    best = max(report.results, key=lambda r: r.images_per_s)
    assert [r.best for r in report.results] == [r is best for r in report.results]
    assert report.best_batch_size == best.batch_size and report.best is best


def test_duration_mode_counts_what_ran():
    fake = FakeRuntime()
    report = _run(fake, batch_sizes=[2], warmup=0, duration=0.02)
    r = report.results[0]
    assert r.batches >= 1 and r.images == 2 * r.batches
    assert fake.rows == r.images  # no warm-up calls here, so every row seen was timed
    assert report.settings["iters"] is None and report.settings["duration_s"] == 0.02


def test_inputs_are_random_nonzero_and_rotated():
    bufs = make_inputs(2, (8, 8), num_buffers=4, seed=1)
    assert len(bufs) == 4 and all(b.shape == (2, 3, 8, 8) and b.dtype == np.float32 for b in bufs)
    assert all(np.abs(b).max() > 0 for b in bufs)
    assert all(not np.array_equal(bufs[i], bufs[j]) for i in range(4) for j in range(i + 1, 4))
    assert all(0.5 < b.std() < 1.5 and abs(b.mean()) < 0.5 for b in bufs)  # standard normal
    assert np.array_equal(make_inputs(2, (8, 8), seed=1)[0], bufs[0])  # seeded
    with pytest.raises(ValueError):
        make_inputs(1, (8, 8), num_buffers=MIN_BUFFERS - 1)

    fake = FakeRuntime()
    _run(fake, batch_sizes=[1], warmup=0, iters=6)
    ids = [s[0] for s in fake.seen]
    assert len(set(ids)) == MIN_BUFFERS  # 3 buffers, used in rotation
    assert ids[:3] == ids[3:6]
    assert all(std > 0.1 and peak > 0 for _, std, peak in fake.seen)


def test_short_outputs_are_an_error():
    with pytest.raises(RuntimeError, match="returned 1 rows for a batch of 2"):
        _run(FakeRuntime(short_by=1), batch_sizes=[2], warmup=0, iters=2)


@pytest.mark.parametrize("kwargs, message", [
    (dict(iters=3, duration=1.0), "not both"),
    (dict(num_buffers=2), ">= 3"),
    (dict(batch_sizes=[0]), "positive"),
    (dict(iters=0), "iters"),
    (dict(input_size="abc"), "HxW"),
])
def test_bad_settings(kwargs, message):
    kwargs.setdefault("batch_sizes", [1])
    with pytest.raises(ValueError, match=message):
        _run(FakeRuntime(), **kwargs)


def test_flops_and_limits_in_report():
    pytest.importorskip("torch")
    report = benchmark("unetpp_dsb2018", BenchOptions(batch_sizes=[2], warmup=0, iters=2, limit_tflops=100.0,
                                                      limit_images_per_s=1e6), runtime=FakeRuntime())
    r = report.results[0]
    assert report.flops_per_image == pytest.approx(9.7e9, rel=0.005)
    assert r.achieved_tflops == pytest.approx(report.flops_per_image * r.images_per_s / 1e12)
    assert r.share_of_limit == pytest.approx(r.achieved_tflops / 100.0)
    assert r.share_of_image_limit == pytest.approx(r.images_per_s / 1e6)


def test_host_memory_and_environment_recorded():
    assert host_peak_rss_bytes() > 1 << 20
    report = _run(FakeRuntime(), batch_sizes=[1], warmup=0, iters=1)
    r = report.results[0]
    assert r.host_peak_rss_bytes > 1 << 20 and r.host_peak_rss_scope in ("batch", "process")
    assert r.device_peak_bytes is None and r.split is None  # CPU run: no device numbers invented
    assert report.environment  # from segdeploy.core.environment (or the documented fallback)
    assert report.runtime == {"backend": "fake", "precision": "fp32", "provider": "numpy"}


def _image_folder(tmp_path, n=7):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(n):
        Image.fromarray(photo(40 + i, 50, seed=i)).save(folder / f"im{i}.png")
    return folder


def test_end_to_end_counts_partial_batch_and_writes_masks(tmp_path):
    folder = _image_folder(tmp_path, 7)
    fake = FakeRuntime()
    report = _run(fake, batch_sizes=[4], warmup=0, iters=2, images=folder, e2e_workers=2)
    e2e = report.results[0].e2e
    assert e2e is not None
    assert e2e.images == 7 and e2e.batches == 2  # 4 + 3, never 2 x 4
    assert e2e.masks_written == 7 and e2e.failed == 0
    assert e2e.images_per_s == pytest.approx(7 / e2e.wall_s)
    assert e2e.ratio_to_pure == pytest.approx(e2e.images_per_s / report.results[0].images_per_s)
    # pure: 2 x 4 rows; e2e: an untimed warm-up batch of 4, then 7
    assert fake.rows == 8 + 4 + 7
    assert report.settings["e2e_images"] == 7
    with pytest.raises(FileNotFoundError):
        _run(FakeRuntime(), batch_sizes=[1], iters=1, images=tmp_path / "missing")


def _two_reports():
    a = _run(FakeRuntime(precision="fp32"), batch_sizes=[1, 2, 4], warmup=0, iters=3)
    b = _run(FakeRuntime(precision="fp16"), batch_sizes=[1, 2, 4], warmup=0, iters=3)
    return a, b


def test_json_round_trip(tmp_path):
    a, _ = _two_reports()
    data = json.loads(a.to_json())
    assert data["schema"] == "segdeploy.bench/1"
    assert BenchReport.from_dict(data) == a
    path = a.save_json(tmp_path / "r.json")
    assert load_report(path) == a
    r0 = data["results"][0]
    assert r0["host_peak_rss_mib"] == pytest.approx(r0["host_peak_rss_bytes"] / 2**20)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json"):
        load_report(tmp_path / "bad.json")


def test_markdown_and_csv_contents():
    a, b = _two_reports()
    md = render_markdown([a, b])
    assert md.count("### unetpp_dsb2018") == 2 and "fake fp32" in md and "fake fp16" in md
    table_lines = [line for line in md.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(table_lines) == 6
    best_lines = [line for line in table_lines if "**best**" in line]
    assert sorted(int(line.split("|")[1]) for line in best_lines) == sorted([a.best_batch_size, b.best_batch_size])
    assert "Hyndman & Fan" in md  # the percentile method is stated

    rows = list(csv.DictReader(io.StringIO(render_csv([a, b]))))
    assert len(rows) == 6
    assert [r["label"] for r in rows] == ["fake fp32"] * 3 + ["fake fp16"] * 3
    for row, result in zip(rows[:3], a.results):
        assert int(row["batch_size"]) == result.batch_size and int(row["images"]) == result.images
        assert float(row["images_per_s"]) == pytest.approx(result.images_per_s)
        assert float(row["latency_p90_ms"]) == pytest.approx(result.latency.p90_ms)
        assert row["best"] == str(result.best)
        assert row["device_peak_bytes"] == "" and row["e2e_images_per_s"] == ""


def test_plot_written(tmp_path):
    a, b = _two_reports()
    path = plot_reports([a, b], tmp_path / "sub" / "plot.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with Image.open(path) as img:
        assert img.size[0] > img.size[1] > 100
    with pytest.raises(ValueError):
        plot_reports([], tmp_path / "empty.png")


@pytest.fixture
def fake_runtimes(monkeypatch):
    from segdeploy.backends import is_auto

    opened = []
    module = types.ModuleType("segdeploy.backends")

    class RuntimeUnavailable(RuntimeError):
        pass

    def open_runtime(model, backend="torch", device="cpu", precision="fp32", weights=None, onnx_path=None,
                     **options):
        opened.append(dict(model=model, backend=backend, device=device, precision=precision, weights=weights))
        if backend == "auto":  # what open_runtime(backend="auto") leaves on the runtime
            fake = FakeRuntime(precision="bf16")
            fake.selection = {
                "backend": "openvino", "precision": "bf16", "quantizer": None, "source": "probe",
                "why": "openvino bf16: the fastest passing", "table": [
                    {"configuration": "openvino bf16", "status": "pass", "images_per_s": 40.0,
                     "measures": {"mask_iou": 0.99}, "reason": ""},
                    {"configuration": "openvino int8 (ort-qdq)", "status": "fail", "images_per_s": 60.0,
                     "measures": {"mask_iou": 0.5}, "reason": "mask IoU 0.500 < 0.95"}]}
            return fake
        return FakeRuntime(precision=precision)

    def select_auto(model, device="cpu", precision=None):
        return ("openvino", precision or "bf16")

    module.RuntimeUnavailable = RuntimeUnavailable
    module.is_auto = is_auto
    module.open_runtime = open_runtime
    module.select_auto = select_auto
    # The CLI checks --backend against the real registry while parsing: load it before the stand-in
    # replaces the package (its submodules cannot be imported through a plain module).
    from segdeploy.backends.base import backend_names

    backend_names()
    monkeypatch.setitem(sys.modules, "segdeploy.backends", module)
    return opened


def test_cli_writes_json_csv_plot_and_prints_json_numbers(tmp_path, fake_runtimes, capsys, monkeypatch):
    from segdeploy.cli.main import main

    monkeypatch.setenv("COLUMNS", "250")  # rich would squeeze the table into 80 columns

    out = tmp_path / "r"
    code = main(["bench", "unetpp_dsb2018", "--backend", "auto", "--precision", "auto", "--batch-sizes", "1,2",
                 "--warmup", "1", "--iters", "3", "--input-size", "64x64", "--json", f"{out}.json",
                 "--csv", f"{out}.csv", "--plot", f"{out}.png", "--markdown", f"{out}.md", "--quiet"])
    assert code == 0
    assert fake_runtimes == [dict(model="unetpp_dsb2018", backend="auto", device="cpu", precision=None,
                                  weights="random")]
    report = load_report(f"{out}.json")
    assert report.input_size == (64, 64) and [r.batch_size for r in report.results] == [1, 2]
    assert report.precision == "bf16" and report.settings["warmup"] == 1
    assert (tmp_path / "r.png").stat().st_size > 0 and (tmp_path / "r.md").read_text().startswith("###")
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 3
    printed = capsys.readouterr().out
    for r in report.results:  # the images/s shown in the table are the JSON's, formatted
        from segdeploy.bench.render import _fmt

        assert _fmt(r.images_per_s) in printed
    assert f"best: batch {report.best_batch_size}" in printed
    # the table behind the auto choice: the failing, faster int8 row is shown with its reason
    assert "backend auto → openvino bf16 (probe)" in printed
    assert "mask IoU 0.500 < 0.95" in printed and "60.00" in printed


def test_cli_rejects_iters_with_duration(fake_runtimes):
    from segdeploy.cli.main import main

    with pytest.raises(SystemExit):
        main(["bench", "u2netp", "--iters", "3", "--duration", "1"])


@pytest.mark.gpu
def test_cuda_path_split_and_memory():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")

    class TorchCudaRuntime:
        name = "torch-cuda-test"

        def __init__(self):
            self.net = torch.nn.Conv2d(3, 4, 3, padding=1).cuda().eval()

        def warmup(self, shape):
            pass

        @torch.no_grad()
        def run_device(self, x):
            return [self.net(x)]

        def run(self, batch):
            return [o.cpu().numpy() for o in self.run_device(torch.from_numpy(batch).cuda())]

        def describe(self):
            return {"backend": "torch", "precision": "fp32", "device": "cuda"}

    report = benchmark("unetpp_dsb2018", BenchOptions(device="cuda", batch_sizes=[1, 8], warmup=2, iters=5,
                                                      count_flops=False), runtime=TorchCudaRuntime())
    for r in report.results:
        assert r.cuda_latency is not None and r.cuda_latency.count == 5
        assert r.device_peak_bytes > 0 and r.device_used_bytes > 0
        assert r.split.method == "run_device" and r.split.input_bytes == r.batch_size * 3 * 96 * 96 * 4
        assert r.device_only.images == 5 * r.batch_size
    assert report.settings["device_name"]


class _CpuStandInForCuda:
    """Implements the harness's CUDA interface on the CPU, so the GPU code path runs on any machine."""

    def __init__(self, device):
        self.device = device
        self.synced = 0
        self.resets = 0
        self.torch = types.SimpleNamespace(cuda=types.SimpleNamespace(get_device_name=lambda d: "Stand-in GPU"))

    def sync(self):
        self.synced += 1

    def reset_peak(self):
        self.resets += 1

    def peaks(self):
        return 1000, 2000, 3000

    def timer(self):
        from segdeploy.bench.timing import now

        class T:
            def start(self):
                self.t0 = now()

            def stop(self):
                self.t1 = now()

            def elapsed_s(self):
                return self.t1 - self.t0

        return T()

    def copy_ms(self, nbytes, direction, reps=10):
        return 0.25 if direction == "h2d" else 0.5

    def to_device(self, array):
        return array


class DeviceFake(FakeRuntime):
    def __init__(self):
        super().__init__()
        self.device_rows = 0

    def run_device(self, x):
        self.device_rows += x.shape[0]
        return [x[:, :1]]


@pytest.mark.parametrize("with_run_device", [True, False])
def test_cuda_code_path_with_cpu_stand_in(monkeypatch, with_run_device):
    import segdeploy.bench.harness as bench

    monkeypatch.setattr(bench, "CudaCounters", _CpuStandInForCuda)
    fake = DeviceFake() if with_run_device else FakeRuntime()
    report = benchmark("unetpp_dsb2018", BenchOptions(device="cuda", batch_sizes=[1, 2], warmup=1, iters=4,
                                                      count_flops=False, precision="fp16"), runtime=fake)
    for r in report.results:
        assert r.cuda_latency.count == r.latency.count == 4
        assert (r.device_peak_bytes, r.device_reserved_bytes, r.device_used_bytes) == (1000, 2000, 3000)
        assert r.split.h2d_ms == 0.25 and r.split.d2h_ms == 0.5
        assert r.split.input_bytes == r.batch_size * 3 * 96 * 96 * 4
        assert r.split.output_bytes == r.batch_size * 1 * 96 * 96 * 4
        if with_run_device:
            assert r.split.method == "run_device" and r.device_only.images == 4 * r.batch_size
            assert r.split.compute_ms == r.device_only.latency.median_ms
        else:
            assert r.split.method == "copy-probe" and r.device_only is None
            assert r.split.compute_ms == pytest.approx(max(0.0, r.cuda_latency.median_ms - 0.75))
    if with_run_device:
        assert fake.device_rows == sum((1 + 4) * b for b in (1, 2))  # 1 warm-up + 4 timed per size
    assert report.settings["device_name"] == "Stand-in GPU" and report.limit_tflops is None
    assert "H2D / compute / D2H ms" in render_markdown(report)
    assert BenchReport.from_dict(json.loads(report.to_json())) == report


class _TimedStaging:
    """Stand-in for the torch backend's Staging: records a (h2d, compute, d2h) split per call."""

    def __init__(self):
        self.splits = []
        self.on = False

    def time_copies(self, on=True):
        self.on = on
        self.splits = [] if on else self.splits


class SelectingFake(FakeRuntime):
    """A runtime whose run() takes ``outputs=`` and whose staging times its real copies."""

    def __init__(self):
        super().__init__()
        self.staging = _TimedStaging()
        self.asked = []

    def run(self, batch, outputs=None):
        self.asked.append(outputs)
        out = super().run(batch)
        if self.staging.on:
            self.staging.splits.append((0.1, 2.0 + len(self.staging.splits), 0.3))
        return out


def test_cuda_split_comes_from_the_copies_run_really_does(monkeypatch):
    import segdeploy.bench.harness as bench

    monkeypatch.setattr(bench, "CudaCounters", _CpuStandInForCuda)
    fake = SelectingFake()
    report = benchmark("u2netp", BenchOptions(device="cuda", batch_sizes=[1], warmup=1, iters=5,
                                              count_flops=False, input_size=(32, 32)), runtime=fake)
    split = report.results[0].split
    assert split.method == "run-events"
    assert (split.h2d_ms, split.compute_ms, split.d2h_ms) == (0.1, 4.0, 0.3)  # medians of the 5 timed calls
    assert not fake.staging.on  # switched off after the timed loop
    # Pure mode asked for only the output u2netp's decoding reads (d0), like the pipeline.
    assert set(fake.asked) == {(0,)}


def test_device_limits_table_knows_several_gpus():
    from segdeploy.bench.memory import device_limit

    assert device_limit("NVIDIA H100 80GB HBM3", "fp16")[0] == 810.0
    assert device_limit("NVIDIA H200", "bf16")[0] > 900
    assert device_limit("NVIDIA A100-SXM4-80GB", "tf32")[0] == 156.0
    assert device_limit("NVIDIA H100 PCIe", "fp16")[0] == 756.0  # the PCIe card is not the SXM one
    assert device_limit("AMD EPYC", "fp16") is None and device_limit(None, "fp16") is None
