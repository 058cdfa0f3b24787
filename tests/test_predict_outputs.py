"""predict's outputs: distinct paths, never an input, a manifest that refuses other settings, one-line
errors before any work (issue 10 faults, issue 14 single-file output)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from segdeploy.cli.main import main
from tests.image_zoo import photo

FAST = ("--weights", "random", "--backend", "torch", "--quiet")


def run_cli(*argv):
    return main([str(a) for a in argv])


def _save(path, h=24, w=32, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo(h, w, seed)).save(path)
    return path


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a runtime is opened (errors must come before the model loads)."""
    import segdeploy.jobs.session as session_module

    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the error")

    monkeypatch.setattr(session_module, "open_model_runtime", refuse)


def test_same_name_in_two_folders_gives_two_masks(tmp_path):
    _save(tmp_path / "dirA" / "x.jpg", 20, 30, 1)
    _save(tmp_path / "dirB" / "x.jpg", 26, 18, 2)
    out = tmp_path / "out"
    assert run_cli("predict", "u2netp", tmp_path / "dirA", tmp_path / "dirB", "-o", out, *FAST) == 0
    assert np.asarray(Image.open(out / "dirA" / "x.png")).shape == (20, 30)
    assert np.asarray(Image.open(out / "dirB" / "x.png")).shape == (26, 18)


def test_collision_is_an_error_before_any_work(tmp_path, capsys, no_model):
    for name in ("a.jpg", "a.png", "a.jpg.png"):  # a.jpg → a.jpg.png (stem shared with a.png) = a.jpg.png's mask
        _save(tmp_path / "in" / name)
    assert run_cli("predict", "u2netp", tmp_path / "in", "-o", tmp_path / "out", *FAST) == 2
    assert "both be written" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_output_equal_to_input_folder_is_refused(tmp_path, capsys, no_model):
    src = _save(tmp_path / "photos" / "a.png")
    before = src.read_bytes()
    for extra in ((), ("--overwrite",)):
        assert run_cli("predict", "u2netp", tmp_path / "photos", "-o", tmp_path / "photos", *FAST, *extra) == 2
        assert "is the input folder" in capsys.readouterr().err
    assert src.read_bytes() == before


def test_named_input_inside_output_is_never_replaced(tmp_path, capsys, no_model):
    src = _save(tmp_path / "out" / "m.png")
    before = src.read_bytes()
    assert run_cli("predict", "u2netp", src, "-o", tmp_path / "out", *FAST, "--overwrite") == 2
    assert "would replace the input" in capsys.readouterr().err
    assert src.read_bytes() == before


def test_masks_inside_a_recursive_input_are_not_fed_back(tmp_path):
    _save(tmp_path / "photos" / "a.jpg")
    out = tmp_path / "photos" / "masks"
    summary = tmp_path / "s.json"
    for _ in range(2):
        assert run_cli("predict", "u2netp", tmp_path / "photos", "--recursive", "-o", out, *FAST, "--json", summary) == 0
        assert json.loads(summary.read_text())["found"] == 1
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["a.png"]


def test_output_that_is_a_file_fails_before_loading(tmp_path, capsys, no_model):
    _save(tmp_path / "a.jpg")
    _save(tmp_path / "b.jpg")
    (tmp_path / "existing").write_text("x")
    assert run_cli("predict", "u2netp", tmp_path / "a.jpg", tmp_path / "b.jpg", "-o", tmp_path / "existing", *FAST) == 2
    assert "existing file" in capsys.readouterr().err


def test_manifest_resumes_refuses_other_settings_and_overwrite_recomputes(tmp_path, capsys):
    _save(tmp_path / "in" / "a.jpg", seed=3)
    out = tmp_path / "out"
    assert run_cli("predict", "u2netp", tmp_path / "in", "-o", out, *FAST, "--save-prob") == 0
    manifest = json.loads((out / ".segdeploy-manifest.json").read_text())
    assert manifest["settings"]["model"] == "u2netp" and manifest["settings"]["weights"] == {"kind": "random", "seed": 0}
    assert manifest["runtime"]["backend"] == "torch" and manifest["runtime"]["precision"] == "fp32"
    assert manifest["settings"]["preprocessing"] and manifest["settings"]["segdeploy"]
    assert manifest["files"]["a.png"]["status"] == "written"
    mask = (out / "a.png").read_bytes()
    prob = np.load(out / "a.npy")
    capsys.readouterr()

    assert run_cli("predict", "u2netp", tmp_path / "in", "-o", out, *FAST, "--save-prob") == 0  # resumes
    assert "skipped 1" in capsys.readouterr().err

    assert run_cli("predict", "u2netp", tmp_path / "in", "-o", out, *FAST, "--save-prob", "--seed", "7") == 2
    err = capsys.readouterr().err
    assert "weights.seed: 0" in err and "7" in err and "--overwrite" in err and "Traceback" not in err
    assert (out / "a.png").read_bytes() == mask  # the old masks are untouched

    assert run_cli("predict", "u2netp", tmp_path / "in", "-o", out, "--weights", "random", "--quiet",
                   "--backend", "onnxruntime", "--save-prob") == 2
    assert "backend: torch" in capsys.readouterr().err

    assert run_cli("predict", "u2netp", tmp_path / "in", "-o", out, *FAST, "--save-prob", "--seed", "7",
                   "--overwrite") == 0
    assert not np.array_equal(np.load(out / "a.npy"), prob)
    assert json.loads((out / ".segdeploy-manifest.json").read_text())["settings"]["weights"]["seed"] == 7


def test_foreign_files_without_manifest_are_not_replaced(tmp_path, capsys, no_model):
    _save(tmp_path / "in" / "a.jpg")
    foreign = tmp_path / "out" / "a.png"
    foreign.parent.mkdir()
    foreign.write_bytes(b"someone else's file")
    assert run_cli("predict", "u2netp", tmp_path / "in", "-o", tmp_path / "out", *FAST) == 2
    assert "no segdeploy manifest" in capsys.readouterr().err
    assert foreign.read_bytes() == b"someone else's file"


def test_json_to_a_folder_or_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    _save(tmp_path / "a.jpg")
    assert run_cli("predict", "u2netp", tmp_path / "a.jpg", "-o", tmp_path / "o", *FAST, "--json", tmp_path) == 2
    err = capsys.readouterr().err
    assert "--json" in err and "is a folder" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1

    import errno

    import segdeploy.jobs.predict as job

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(job, "atomic_write_text", full)
    assert run_cli("predict", "u2netp", tmp_path / "a.jpg", "-o", tmp_path / "o", *FAST,
                   "--json", tmp_path / "s.json") == 2
    err = capsys.readouterr().err
    assert "No space left" in err and "Traceback" not in err


def test_fifo_dangling_and_looping_links_named_or_in_folders_fail_by_name(tmp_path, capsys):
    folder = tmp_path / "in"
    _save(folder / "good.jpg")
    os.mkfifo(folder / "pipe.jpg")
    os.symlink(folder / "gone.jpg", folder / "dangling.jpg")
    os.symlink("loop2.png", folder / "loop1.png")
    os.symlink("loop1.png", folder / "loop2.png")
    out = tmp_path / "out"
    summary = tmp_path / "s.json"
    assert run_cli("predict", "u2netp", folder / "pipe.jpg", folder / "dangling.jpg", folder / "loop1.png",
                   folder / "good.jpg", "-o", out, *FAST, "--json", summary) == 1
    err = capsys.readouterr().err
    for name in ("pipe.jpg", "dangling.jpg", "loop1.png"):
        assert name in err
    record = json.loads(summary.read_text())
    assert record["written"] == 1 and len(record["failed"]) == 3
    assert run_cli("predict", "u2netp", folder, "-o", tmp_path / "out2", *FAST, "--json", summary) == 1
    record = json.loads(summary.read_text())
    assert record["found"] == 5 and record["written"] == 1 and len(record["failed"]) == 4
