"""A backend from outside: the onnxref plugin in tests/plugins (onnx.reference.ReferenceEvaluator
running segdeploy's ONNX export) is pip-installed into a temporary folder and runs through predict,
compare, bench, serve and auto's probe without any change to segdeploy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_serve_support import free_port, wait_until_ready

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "tests" / "plugins"
BACKEND = PLUGINS / "segdeploy_refbackend"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The backend plugin and the tinyseg model plugin (a 64 x 64 two-layer model: the pure-Python
    evaluator takes a fraction of a second per image)."""
    site = tmp_path_factory.mktemp("backend-plugin-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(BACKEND), str(PLUGINS / "segdeploy_tinyseg")],
                   check=True, capture_output=True)
    return site


def _env(site: Path, **extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT / "src")]), **extra)


def _python(site: Path, code: str, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=_env(site, **env), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _images(folder: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40 + 4 * i, 56, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


def test_readme_example_is_the_installed_backend_plugin():
    readme = (ROOT / "README.md").read_text()
    source = (BACKEND / "segdeploy_refbackend" / "__init__.py").read_text()
    assert "## Adding a backend" in readme and source.strip() in readme


def test_help_lists_the_plugin_backend(plugin_site):
    for command in ("predict", "compare"):
        proc = subprocess.run([sys.executable, "-m", "segdeploy.cli.main", command, "--help"], env=_env(plugin_site),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and "onnxref" in proc.stdout, command


def test_plugin_backend_runs_through_predict_compare_and_bench(plugin_site, tmp_path):
    images = _images(tmp_path / "images")
    out, cmp_json, bench_json = tmp_path / "out", tmp_path / "cmp.json", tmp_path / "bench.json"
    # one process for the three commands: importing torch once on a busy 2-core machine
    _python(plugin_site, f"""
        from segdeploy.cli.main import main
        common = ["tinyseg", "--weights", "random"]
        assert main(["predict", "tinyseg", {str(images)!r}, "-o", {str(out)!r}, "--weights", "random",
                     "--backend", "onnxref", "--quiet"]) == 0
        assert main(["compare", *common, "--images", {str(images)!r}, "--backends", "onnxref,onnxruntime",
                     "--allow-few-images", "--quiet", "--json", {str(cmp_json)!r}]) == 0
        assert main(["bench", *common, "--backend", "onnxref", "--batch-sizes", "1", "--duration", "0.2",
                     "--json", {str(bench_json)!r}]) == 0
    """)
    masks = sorted(out.rglob("*.png"))
    assert [p.name for p in masks] == ["img0.png", "img1.png", "img2.png"]
    assert np.asarray(Image.open(masks[1])).shape == (44, 56)
    rows = {row["backend"]: row for row in json.loads(cmp_json.read_text())["rows"]}
    assert rows["onnxref"]["status"] == "pass" and rows["onnxruntime"]["status"] == "pass"
    bench = json.loads(bench_json.read_text())
    assert bench["backend"] == "onnxref" and bench["model"] == "tinyseg"


def test_auto_probes_the_plugin_backend_and_takes_the_fastest_passing(plugin_site, tmp_path):
    proc = _python(plugin_site, """
        import json
        from segdeploy.backends import open_runtime
        from segdeploy.backends.auto import candidates_for

        from segdeploy.backends.auto_probe import choose_auto
        from segdeploy.core.registry import get_spec
        from segdeploy.zoo import create_model

        labels = [c.label for c in candidates_for("cpu", "fp32")]
        # the timed probe of every candidate (what `segdeploy auto` runs; an empty cache alone gets
        # the quick choice), then auto opens what it cached
        choose_auto(create_model("tinyseg", "random"), get_spec("tinyseg"), "cpu", "fp32", full=True)
        runtime = open_runtime("tinyseg", "auto", precision="fp32", weights="random")
        print(json.dumps({"labels": labels, "selection": runtime.selection}))
    """, SEGDEPLOY_AUTO_PROBE="1", SEGDEPLOY_AUTO_INT8="0", SEGDEPLOY_CACHE=str(tmp_path / "cache"))
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "onnxref fp32" in result["labels"]
    table = {row["configuration"]: row for row in result["selection"]["table"]}
    assert table["onnxref fp32"]["status"] == "pass"
    chosen = f"{result['selection']['backend']} {result['selection']['precision']}"
    fastest = max((row for row in table.values() if row["status"] == "pass"), key=lambda r: r["images_per_s"])
    assert chosen == fastest["configuration"]


def test_plugin_backend_serves_a_request(plugin_site, tmp_path):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    image = _images(tmp_path / "images", 1) / "img0.png"
    port = free_port()
    log = open(tmp_path / "server.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "segdeploy.cli.main", "serve", "tinyseg", "--weights", "random", "--backend",
         "onnxref", "--port", str(port), "--check-images", "16", "--check-size", "32x48", "--log-level", "warning"],
        env=_env(plugin_site), stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(proc, base, log)
        reply = httpx.post(base + "/v1/models/tinyseg/predict", files={"file": ("img0.png", image.read_bytes())},
                           timeout=300)
        assert reply.status_code == 200
        import io

        assert np.asarray(Image.open(io.BytesIO(reply.content))).shape == (40, 56)
        served = httpx.get(base + "/v1/models", timeout=30).json()["models"][0]
        assert served["backend"] == "onnxref" and served["verified"]
    finally:
        proc.kill()
        proc.wait(60)
        log.close()


def test_a_broken_backend_plugin_is_named_and_the_others_load(tmp_path):
    site = tmp_path / "site"
    dist = site / "broken_backend-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-backend\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[segdeploy.backends]\nbrokenbe = broken_backend_module\n")
    (site / "broken_backend_module.py").write_text("raise ImportError('this backend is broken on purpose')\n")
    proc = _python(site, """
        from segdeploy.backends import backend_names, plugin_errors
        print(",".join(backend_names()))
        print(sorted(plugin_errors()))
    """)
    names, errors = proc.stdout.strip().splitlines()
    assert {"torch", "onnxruntime", "openvino"} <= set(names.split(",")) and "brokenbe" not in names
    assert errors == "['brokenbe']"
    warned = [line for line in proc.stderr.splitlines() if "brokenbe" in line]
    assert len(warned) == 1 and "broken on purpose" in warned[0]
