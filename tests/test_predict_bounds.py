"""Big inputs within bounds (issue 10 memory faults, issue 14 item 5): peak RSS measured in a child
process, the memory warning, and Ctrl-C during a long forward pass."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segdeploy.bench.peak_rss import run_measured
from tests.image_zoo import photo

SRC = str(Path(__file__).resolve().parents[1] / "src")
GIB = 1 << 30


def peak_rss(tmp_path, *argv, timeout=900) -> tuple[int, int, str]:
    """(exit code, peak RSS bytes, stderr) of ``segdeploy *argv`` in a fresh process."""
    done = run_measured(list(argv), env=dict(os.environ, PYTHONPATH=SRC), timeout=timeout)
    return done.returncode, done.peak_rss_bytes, done.stderr


@pytest.mark.slow
def test_1bit_png_of_144_megapixels_stays_under_1_gib(tmp_path):
    pixels = np.zeros((12000, 12000), bool)
    pixels[3000:9000, 2000:10000] = True
    Image.fromarray(pixels).convert("1").save(tmp_path / "scan.png", optimize=True)
    assert (tmp_path / "scan.png").stat().st_size < 100_000
    code, rss, err = peak_rss(tmp_path, "predict", "u2netp", tmp_path / "scan.png", "-o", tmp_path / "out",
                              "--weights", "random", "--backend", "torch", "--quiet")
    assert code == 0, err
    assert rss < GIB, f"peak RSS {rss / 2**20:.0f} MiB"
    assert Image.open(tmp_path / "out" / "scan.png").size == (12000, 12000)


@pytest.mark.slow
def test_8000x6000_jpeg_stays_well_under_the_old_2_7_gib(tmp_path):
    Image.fromarray(photo(600, 800)).resize((8000, 6000)).save(tmp_path / "big.jpg", quality=80)
    code, rss, err = peak_rss(tmp_path, "predict", "u2netp", tmp_path / "big.jpg", "-o", tmp_path / "out",
                              "--weights", "random", "--backend", "torch", "--quiet")
    assert code == 0, err
    assert rss < GIB, f"peak RSS {rss / 2**20:.0f} MiB"
    assert Image.open(tmp_path / "out" / "big.png").size == (8000, 6000)


@pytest.mark.slow
def test_wseg_on_a_12_megapixel_photo_stays_within_4_gb(tmp_path):
    Image.fromarray(photo(300, 400)).resize((4000, 3000)).save(tmp_path / "photo.jpg", quality=85)
    code, rss, err = peak_rss(tmp_path, "predict", "wseg_voc", tmp_path / "photo.jpg", "-o", tmp_path / "out",
                              "--weights", "random", "--backend", "torch", "--quiet")
    assert code == 0, err
    assert rss < 4e9, f"peak RSS {rss / 2**20:.0f} MiB"
    mask = Image.open(tmp_path / "out" / "photo.png")
    assert mask.size == (4000, 3000) and mask.mode == "P"


def test_memory_estimate_warns_before_a_native_resolution_run(tmp_path):
    from segdeploy import get_spec
    from segdeploy.engine.transforms import InputPolicy
    from segdeploy.jobs.sizing import check_memory

    path = tmp_path / "photo.jpg"
    Image.new("RGB", (4000, 3000), (90, 120, 150)).save(path)  # header is what counts
    spec = get_spec("wseg_voc")
    unbounded = check_memory(spec, InputPolicy.for_model(spec, 0), [path], None, budget=8 * GIB)
    assert unbounded and "photo.jpg" in unbounded and "4000x3000" in unbounded and "--max-size" in unbounded
    assert check_memory(spec, InputPolicy.for_model(spec), [path], None, budget=8 * GIB) is None


@pytest.mark.slow
def test_ctrl_c_inside_a_long_forward_pass_stops_within_2_s(tmp_path):
    # unet_carvana at native resolution (--max-size 0) on a 2000x1600 photo: a forward pass of many
    # seconds on a CPU, far longer than the 2 s allowed to stop.
    Image.fromarray(photo(400, 500)).resize((2000, 1600)).save(tmp_path / "car.jpg", quality=85)
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.Popen([sys.executable, "-m", "segdeploy.cli.main", "predict", "unet_carvana",
                             str(tmp_path / "car.jpg"), "-o", str(tmp_path / "out"), "--weights", "random",
                             "--backend", "torch", "--quiet", "--max-size", "0"],
                            env=env, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if line.startswith("predicting"):
            break
    time.sleep(3.0)  # reading + preprocessing done, the forward pass running
    assert proc.poll() is None, "finished before the interrupt: the test needs a longer forward pass"
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    code = proc.wait(timeout=60)
    elapsed = time.monotonic() - sent
    assert code == 130, rest
    assert elapsed < 2.0, f"took {elapsed:.1f} s to stop"
    assert "interrupted" in rest and "Traceback" not in rest
    leftovers = [p for p in (tmp_path / "out").rglob("*")] if (tmp_path / "out").exists() else []
    assert not [p for p in leftovers if p.suffix in (".png", ".tmp")]
