"""A model from outside: the tiny plugin in tests/plugins is pip-installed into a temporary folder and
run through predict, export, compare, eval and bench without any change to segdeploy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "tests" / "plugins" / "segdeploy_tinyseg"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("plugin-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(PLUGIN)], check=True, capture_output=True)
    return site


def _cli(site: Path, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT / "src")]))
    proc = subprocess.run([sys.executable, "-m", "segdeploy.cli.main", *argv], env=env, capture_output=True,
                          text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"segdeploy {' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _images(folder: Path, n: int, masks: Path | None = None) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    if masks is not None:
        masks.mkdir(parents=True)
    for i in range(n):
        h, w = 48 + 4 * i, 64 + 2 * i
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i:02d}.png")
        if masks is not None:
            gt = np.zeros((h, w), np.uint8)
            gt[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
            Image.fromarray(gt).save(masks / f"img{i:02d}.png")
    return folder


def test_readme_example_is_the_installed_plugin():
    readme = (ROOT / "README.md").read_text()
    source = (PLUGIN / "segdeploy_tinyseg" / "__init__.py").read_text()
    assert source.strip() in readme


def test_plugin_model_runs_through_every_command(plugin_site, tmp_path):
    listed = json.loads(_cli(plugin_site, "list", "--json").stdout)
    assert "tinyseg" in [m["name"] for m in listed]

    images = _images(tmp_path / "images", 16, masks=tmp_path / "masks")
    out = tmp_path / "out"
    _cli(plugin_site, "predict", "tinyseg", str(images), "-o", str(out), "--weights", "random", "--quiet")
    written = sorted(p.name for p in out.rglob("*.png"))
    assert len(written) == 16
    mask = np.asarray(Image.open(next(out.rglob("img03.png"))))
    assert mask.shape == (60, 70) and set(np.unique(mask)) <= {0, 255}

    onnx_file = tmp_path / "tinyseg.onnx"
    _cli(plugin_site, "export", "tinyseg", "--weights", "random", "-o", str(onnx_file))
    assert onnx_file.stat().st_size > 0

    # the exported file runs through predict with the model's own pre/post-processing
    out_onnx = tmp_path / "out_onnx"
    _cli(plugin_site, "predict", "tinyseg", str(images), "-o", str(out_onnx), "--onnx", str(onnx_file),
         "--backend", "onnxruntime", "--quiet")
    assert len(list(out_onnx.rglob("*.png"))) == 16

    cmp = _cli(plugin_site, "compare", "tinyseg", "--weights", "random", "--images", str(images),
               "--backends", "onnxruntime", "--precisions", "fp32", "--json", str(tmp_path / "cmp.json"))
    record = json.loads((tmp_path / "cmp.json").read_text())
    assert record["model"] == "tinyseg" and cmp.returncode == 0

    _cli(plugin_site, "eval", "tinyseg", "--dataset", "pairs", "--images", str(images), "--masks",
         str(tmp_path / "masks"), "--dataset-opt", "encoding=gray", "--weights", "random", "--backend", "torch",
         "--json", str(tmp_path / "eval.json"))
    scores = json.loads((tmp_path / "eval.json").read_text())
    assert scores["images_scored"] == 16 and scores["model"] == "tinyseg"

    _cli(plugin_site, "bench", "tinyseg", "--weights", "random", "--backend", "torch", "--batch-sizes", "1,2",
         "--duration", "0.2", "--json", str(tmp_path / "bench.json"))
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert bench["model"] == "tinyseg"


def test_broken_plugin_is_reported_and_builtin_models_still_load(tmp_path):
    site = tmp_path / "site"
    dist = site / "broken_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[segdeploy.models]\nbroken = broken_plugin_module\n")
    (site / "broken_plugin_module.py").write_text("raise ImportError('this plugin is broken on purpose')\n")
    proc = _cli(site, "list", "--json")
    names = [m["name"] for m in json.loads(proc.stdout)]
    assert "u2netp" in names and "broken" not in names
    assert "broken" in proc.stderr and "broken on purpose" in proc.stderr
