"""The benchmark scripts in benchmarks/ run end to end (tiny settings; the numbers are not checked)."""

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def scripts(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name in ("_common", "cpu_compare", "gpu_suite", "auto_vs_torch", "e2e_vs_pure"):
        sys.modules.pop(name, None)
    return lambda name: importlib.import_module(name)


@pytest.mark.slow
def test_cpu_compare_quick(scripts, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    cpu_compare = scripts("cpu_compare")
    assert cpu_compare.main(["--quick", "--models", "unetpp_dsb2018", "--out-dir", str(tmp_path)]) == 0
    (json_path,) = tmp_path.glob("cpu_*_quick.json")
    payload = json.loads(json_path.read_text())
    rows = {r["variant"]: r for r in payload["summary"]}
    for peer in ("ort", "openvino"):  # the peers need nothing from segdeploy but the models
        assert rows[peer]["batch_size"] == 1 and rows[peer]["images_per_s_median"] > 0
    # segdeploy's own variants either ran or say why not
    for key in ("segdeploy", "int8"):
        assert rows[key].get("images_per_s_median", 0) > 0 or rows[key]["error"]
    assert payload["environment"]["packages"]["onnxruntime"]
    md = json_path.with_suffix(".md").read_text()
    assert "| unetpp_dsb2018 | 96x96 | 1 |" in md


def test_gpu_suite_skips_without_cuda(scripts, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    gpu_suite = scripts("gpu_suite")
    assert gpu_suite.main(["--quick", "--out-dir", str(tmp_path)]) == 0
    assert "skipped" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_auto_vs_torch_quick(scripts, tmp_path):
    """The real CLI twice per round; in tests auto is the static choice (probing off)."""
    auto_vs_torch = scripts("auto_vs_torch")
    assert auto_vs_torch.main(["--quick", "--out-dir", str(tmp_path), "--name", "r"]) == 0
    payload = json.loads((tmp_path / "r.json").read_text())
    assert payload["probe_run"]["printed_choice"][0].startswith("backend auto")
    kinds = [r["backend_arg"] for r in payload["runs"]]
    assert kinds == ["(default)", "torch"]
    assert all(len(r["load_before"]) == 3 and r["written"] == 4 for r in payload["runs"])
    assert payload["ratio"] == payload["auto_median"] / payload["torch_median"]
    assert "ratio" in (tmp_path / "r.md").read_text()


@pytest.mark.slow
def test_e2e_vs_pure_quick(scripts, tmp_path):
    e2e = scripts("e2e_vs_pure")
    assert e2e.main(["--quick", "--out-dir", str(tmp_path), "--name", "r"]) == 0
    payload = json.loads((tmp_path / "r.json").read_text())
    (model,) = payload["models"]
    row = model["rows"][0]
    assert model["model"] == "u2netp" and row["pure_median"] > 0 and row["e2e_median"] > 0
    assert set(row["stage_seconds"][0]) == {"read", "preprocess", "infer", "decode", "write"}
    assert "| u2netp |" in (tmp_path / "r.md").read_text()


def test_gpu_check_dry_run_writes_every_key(scripts, tmp_path, monkeypatch):
    """benchmarks/gpu_check.py --dry-run: the GPU check's own code on the CPU with tiny sizes (the
    serve section, two servers, is left to the GPU run: tests/test_serve*.py cover serving here).
    Its scratch folders (photos, masks) are gone afterwards."""
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    gpu_check = scripts("gpu_check")
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path), "--sections", "errors,predict,peers"]) == 0
    payload = json.loads((tmp_path / "gpu_check.json").read_text())
    assert payload["device"]["dry_run"] is True
    row = payload["predict"]["unetpp_dsb2018"]
    assert row["exit_code"] == 0 and row["summary"]["written"] == 6
    assert row["choice"] == {"backend": "torch", "precision": "fp32", "mode": "eager", "channels_last": False}
    assert row["e2e_images_per_s"] > 0 and row["pure_images_per_s"] > 0 and row["e2e_over_pure"] > 0
    assert payload["peers"]["unetpp_dsb2018"]["best"]["eager_fp16"] > 0
    stats = payload["errors"]["unetpp_dsb2018:random"]["rows"]["fp32"]
    assert stats["0"]["max"] == 0.0 and stats["0"]["finite"] is True  # CPU fp32 against itself
    assert "compile_seconds" in payload and (tmp_path / "gpu_check.md").read_text().startswith("# GPU check")
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("gpu-check-")]
