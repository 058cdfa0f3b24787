"""segdeploy demo: the generated image set, and the command end to end (small settings)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segdeploy.cli.main import main
from segdeploy.data import get_layout
from segdeploy.recipes.demo import DEMO_SIZES, SHAPES, render_sample, write_demo_dataset
from segdeploy.report.render import SECTIONS, validate_results


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_set_is_deterministic_and_in_ecssd_layout(tmp_path):
    a = write_demo_dataset(tmp_path / "a", 5, seed=3)
    b = write_demo_dataset(tmp_path / "b", 5, seed=3)
    c = write_demo_dataset(tmp_path / "c", 5, seed=4)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    layout = get_layout("ecssd", a)
    assert [s.id for s in layout] == ["0001", "0002", "0003", "0004", "0005"]
    for index, sample in enumerate(layout):
        image, mask = layout.load(sample)
        assert image.shape == (*DEMO_SIZES[index % len(DEMO_SIZES)], 3) and image.dtype == np.uint8
        assert mask.shape == image.shape[:2] and set(np.unique(mask)) == {0, 255}


@pytest.mark.parametrize("index", range(len(SHAPES)))
def test_each_object_is_salient_and_its_mask_is_exact(index):
    sample = render_sample(index, seed=0)
    fg = sample.mask > 0
    share = fg.mean()
    assert 0.04 < share < 0.6, share  # an object, neither a speck nor the whole frame
    # The object is the salient thing: its mean colour differs from the background's by far more
    # than the grain (sigma 4) and the background texture (+-25).
    image = sample.image.astype(np.float64)
    contrast = np.abs(image[fg].mean(axis=0) - image[~fg].mean(axis=0)).max()
    assert contrast > 40, contrast
    # Mask edge = object edge: pixels just inside the mask look like the object, just outside like the
    # background (1-pixel erosion / dilation, so anti-aliased boundary pixels are excluded).
    inner = fg & np.roll(fg, 1, 0) & np.roll(fg, -1, 0) & np.roll(fg, 1, 1) & np.roll(fg, -1, 1)
    outer = ~(fg | np.roll(fg, 1, 0) | np.roll(fg, -1, 0) | np.roll(fg, 1, 1) | np.roll(fg, -1, 1))
    obj_colour = image[inner].mean(axis=0)
    dist_in = np.abs(image[inner] - obj_colour).sum(axis=1).mean()
    dist_out = np.abs(image[outer] - obj_colour).sum(axis=1).mean()
    assert dist_out > 2 * dist_in


def test_rewriting_with_the_same_settings_leaves_files_alone(tmp_path):
    root = write_demo_dataset(tmp_path / "d", 3)
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*.*")}
    write_demo_dataset(root, 3)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.*")} == mtimes
    write_demo_dataset(root, 2)  # another count: the set is rewritten, no stale third image
    assert sorted(p.name for p in (root / "images").iterdir()) == ["0001.jpg", "0002.jpg"]


@pytest.mark.slow
def test_demo_command_end_to_end(tmp_path, monkeypatch, capsys):
    """The demo's wiring, shrunk (3 images, 64x64 input, batch 1): the real settings are timed by hand."""
    monkeypatch.setenv("SEGDEPLOY_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "demo"
    code = main(["demo", "-o", str(run_dir), "--images", "3", "--model-input-size", "64", "--batch-sizes", "1",
                 "--bench-iters", "2", "--compare-images", "2", "--allow-few-images"])
    assert code == 0
    out = capsys.readouterr().out
    assert "meaningless" in out and "--weights u2netp.pth" in out and "demo finished in" in out
    results = json.loads((run_dir / "results.json").read_text())
    assert validate_results(results) == []
    assert results["weights"]["kind"] == "random" and results["options"]["device"] == "cpu"
    assert results["options"]["data_root"] == str((run_dir / "data").resolve())
    assert len(list((run_dir / "data" / "images").iterdir())) == 3
    assert all(results["steps"][s]["status"] == "done" for s in ("export", "runtimes", "compare", "eval", "bench"))
    bench = [u["label"] for u in results["steps"]["bench"]["result"]["configs"] if u["status"] == "done"]
    assert bench == ["torch fp32", "onnxruntime fp32", "openvino fp32"]
    page = (run_dir / "report.html").read_text()
    markdown = (run_dir / "report.md").read_text()
    for text in (page, markdown):
        assert "meaningless" in text and "u2netp.pth" in text and "Demo run" in text
    for anchor, _ in SECTIONS:
        assert f'<section id="{anchor}">' in page
    with Image.open(run_dir / "plots" / "throughput.png") as plot:
        assert plot.width > 300
