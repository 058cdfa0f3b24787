"""rembg-style ergonomics (issue 14 item 4): one output file, stdin/stdout, --bgcolor, --only-mask,
the Python API's inputs, Session, int8 options from the CLI, whole list/info lines, quiet pipes."""

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segdeploy.cli.main import main
from tests.image_zoo import photo

FAST = ("--weights", "random", "--backend", "torch", "--quiet")
SRC = str(Path(__file__).resolve().parents[1] / "src")


def run_cli(*argv):
    return main([str(a) for a in argv])


@pytest.fixture
def jpg(tmp_path):
    path = tmp_path / "a.jpg"
    Image.fromarray(photo(30, 44, seed=2)).save(path)
    return path


def test_single_input_with_image_suffix_writes_that_file(jpg, tmp_path, capsys):
    target = tmp_path / "one.png"
    assert run_cli("predict", "u2netp", jpg, "-o", target, *FAST) == 0
    assert target.is_file() and np.asarray(Image.open(target)).shape == (30, 44)
    assert run_cli("predict", "u2netp", jpg, "-o", target, *FAST) == 2  # no silent clobbering
    assert "--overwrite" in capsys.readouterr().err
    assert run_cli("predict", "u2netp", jpg, "-o", target, *FAST, "--overwrite", "--cutout") == 0
    assert np.asarray(Image.open(target)).shape == (30, 44, 4)


def test_stdin_to_stdout(jpg, monkeypatch, capsysbinary):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(jpg.read_bytes())))
    assert run_cli("predict", "u2netp", "-", "-o", "-", *FAST) == 0
    data = capsysbinary.readouterr().out
    assert data.startswith(b"\x89PNG")
    assert np.asarray(Image.open(io.BytesIO(data))).shape == (30, 44)


def test_stdin_to_stdout_in_a_shell_pipe(jpg, tmp_path):
    env = dict(os.environ, PYTHONPATH=SRC)
    cmd = f"cat {jpg} | {sys.executable} -m segdeploy.cli.main predict u2netp - -o - {' '.join(FAST)} > {tmp_path}/m.png"
    done = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert np.asarray(Image.open(tmp_path / "m.png")).shape == (30, 44)


def test_bgcolor_composites_and_only_mask_conflicts(jpg, tmp_path, capsys):
    from segdeploy import get_spec, predict
    from segdeploy.tasks import get_task

    out = tmp_path / "o"
    assert run_cli("predict", "u2netp", jpg, "-o", out, *FAST, "--bgcolor", "0,255,0") == 0
    cut = np.asarray(Image.open(out / "a_cutout.png"))
    pred = predict("u2netp", jpg, weights="random", backend="torch", return_maps=True)
    image = np.asarray(Image.open(jpg).convert("RGB"))
    assert np.array_equal(cut, get_task(get_spec("u2netp")).cutout(image, pred, (0, 255, 0)))
    assert cut[..., 3].min() == 255  # opaque background
    assert run_cli("predict", "u2netp", jpg, "-o", out, *FAST, "--only-mask", "--cutout") == 2
    assert "--only-mask" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # argparse: usage error, exit 2
        run_cli("predict", "u2netp", jpg, "-o", tmp_path / "bad.png", *FAST, "--bgcolor", "1,2")
    assert info.value.code == 2 and "R,G,B" in capsys.readouterr().err


def test_api_accepts_path_list_pil_and_array(jpg):
    import segdeploy

    image = np.asarray(Image.open(jpg).convert("RGB"))
    session = segdeploy.Session("u2netp", weights="random", backend="torch")
    one = session.predict(str(jpg))  # a string is one path, not 40 characters
    assert isinstance(one, np.ndarray) and one.shape == (30, 44)
    assert np.array_equal(session.predict(jpg), one)
    assert np.array_equal(session.predict(Image.open(jpg)), one)
    assert np.array_equal(session.predict(image), one)
    many = session.predict([str(jpg), image])
    assert isinstance(many, list) and len(many) == 2 and np.array_equal(many[1], one)
    rgba = session.cutout(image, background=(255, 255, 255))
    assert rgba.shape == (30, 44, 4)
    assert np.array_equal(segdeploy.predict("u2netp", str(jpg), weights="random", backend="torch"), one)


def test_int8_options_reach_the_runtime(jpg, tmp_path, monkeypatch):
    import segdeploy.jobs.session as session_module

    seen = {}

    def capture(model, request):
        seen.update(vars(request))
        raise RuntimeError("stop here")

    monkeypatch.setattr(session_module, "open_model_runtime", capture)
    calib = tmp_path / "calib"
    calib.mkdir()
    with pytest.raises(RuntimeError, match="stop here"):
        run_cli("predict", "u2netp", jpg, "-o", tmp_path / "m.png", "--weights", "random", "--backend",
                "onnxruntime", "--precision", "int8", "--calib", calib)
    assert seen["calib"] == str(calib) and seen["precision"] == "int8" and seen["backend"] == "onnxruntime"
    onnx = tmp_path / "q.onnx"
    onnx.write_bytes(b"onnx")
    with pytest.raises(RuntimeError, match="stop here"):
        run_cli("predict", "u2netp", jpg, "-o", tmp_path / "d", "--backend", "onnxruntime", "--onnx", onnx)
    assert seen["onnx_path"] == str(onnx)


def test_list_and_info_print_whole_lines_at_any_width(capsys, monkeypatch):
    from segdeploy import get_spec

    monkeypatch.setenv("COLUMNS", "40")
    assert run_cli("list") == 0
    out = capsys.readouterr().out
    assert "…" not in out
    for name in ("unetpp_dsb2018_nearest", "wseg_voc"):
        assert get_spec(name).title in out
    assert run_cli("info", "wseg_voc") == 0
    out = capsys.readouterr().out
    assert get_spec("wseg_voc").official.url in out and "…" not in out


@pytest.mark.parametrize("head, first", [("head -1", "{"), ("head -n 0", "")])
def test_info_json_into_head_exits_quietly(head, first):
    # head -n 0 exits before segdeploy writes anything, so the write surely meets a closed pipe.
    env = dict(os.environ, PYTHONPATH=SRC)
    cmd = f"{sys.executable} -m segdeploy.cli.main info u2netp --json | {head}; exit ${{PIPESTATUS[0]}}"
    done = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == first
    assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.mark.slow
def test_int8_from_the_cli_with_calibration_images(jpg, tmp_path):
    import json

    calib = tmp_path / "calib"
    calib.mkdir()
    for seed in range(4):
        Image.fromarray(photo(40, 52, seed=10 + seed)).save(calib / f"c{seed}.png")
    target, summary = tmp_path / "m.png", tmp_path / "s.json"
    assert run_cli("predict", "u2netp", jpg, "-o", target, "--weights", "random", "--backend", "onnxruntime",
                   "--precision", "int8", "--calib", calib, "--quiet", "--json", summary) == 0
    assert np.asarray(Image.open(target)).shape == (30, 44)
    assert json.loads(summary.read_text())["runtime"]["precision"] == "int8"
