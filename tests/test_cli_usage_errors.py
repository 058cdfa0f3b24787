"""Every usage error is one line and exit 2, never a traceback (issue 22 Build 3, issue 23 item 10).

The walk introspects the argparse parsers of every command (segdeploy.cli.*): each option that
takes a value gets values its type must refuse. Options whose values are free text (paths, names)
are listed in FREE_TEXT, so that a new option cannot join without a decision; the commands check
those themselves, and the cases named in the issues are run below.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segdeploy.cli.main import build_parser, main

SRC = str(Path(__file__).resolve().parents[1] / "src")

#: value types whose values cannot be wrong at parse time (paths, names, free text), per option
FREE_TEXT = {
    "-o", "--output", "--out", "--run-dir", "--weights", "--onnx", "--calib", "--json", "--images", "--masks",
    "--data-root", "--dataset", "--split", "--split-file", "--dataset-opt", "--option", "--tolerance",
    "--save-reference", "--reference", "--save-masks", "--scales", "--label", "--csv", "--markdown", "--plot",
    "--address", "--host", "--api-key", "--check-size", "--log-level", "--int8-onnx", "--model", "--photos",
    "--eval-on", "--skip", "--check-images", "--max-inflight-bytes",
}

#: bad values per argparse type (by the type's __name__): each must be refused while parsing
BAD_VALUES = {
    "int": ["x", "1.5"], "float": ["x"], "positive_number": ["x", "0", "-1", "nan"],
    "count_from_0": ["x", "-1"], "count_from_1": ["x", "0", "-3"], "count_from_7": ["x", "6"],
    "backend_name": ["tensorrt"], "precision_name": ["int4", "fp64"], "precision_or_auto": ["int4"],
    "device_name": ["tpu", "cuda:x"],
    "backend_list": ["tensorrt", "torch,bogus", ","], "precision_list": ["int4", ","],
    "size_hw": ["0x0", "axb", "1x2x3"], "int_list": ["a,b"], "_rgba": ["300,0,0", "1,2"],
    "_non_negative": ["-1", "x"], "_size_bytes": ["lots", "0"],
}


def _commands(parser=None, prefix=()) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every command and sub-command (``prepare dsb2018``) with its parser."""
    parser = parser or build_parser()
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[(*prefix, name)] = sub
                found.update(_commands(sub, (*prefix, name)))
    return found


def _value_options():
    for command, parser in _commands().items():
        for action in parser._actions:
            if action.option_strings and action.nargs != 0 and not isinstance(action, argparse._HelpAction):
                yield command, action


def _assert_one_line_usage_error(code, err: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "error:" in lines[0], err


def test_every_option_value_is_typed_or_listed_as_free_text():
    untyped = sorted({f"{' '.join(command)} {action.option_strings[-1]}" for command, action in _value_options()
                      if action.type is None and action.choices is None
                      and not set(action.option_strings) & FREE_TEXT})
    assert not untyped, f"options without a checked type: {untyped}"
    unknown = sorted({getattr(action.type, "__name__", str(action.type)) for _, action in _value_options()
                      if action.type is not None and getattr(action.type, "__name__", "") not in BAD_VALUES
                      and not set(action.option_strings) & FREE_TEXT})
    assert not unknown, f"add bad values for these types to BAD_VALUES: {unknown}"


def test_walk_every_command_option_with_bad_values(capsys):
    checked = 0
    for command, action in _value_options():
        option = action.option_strings[-1]
        if action.choices is not None:
            values = ["no-such-choice"]
        elif action.type is not None and getattr(action.type, "__name__", "") in BAD_VALUES:
            values = BAD_VALUES[action.type.__name__]
        else:
            continue
        for value in values:
            # the bad option comes first: argparse refuses its value before it checks what is missing
            with pytest.raises(SystemExit) as exit_info:
                main([*command, f"{option}={value}"])
            _assert_one_line_usage_error(exit_info.value.code, capsys.readouterr().err)
            checked += 1
    assert checked > 100  # every command's options were walked


def test_unknown_option_and_missing_argument_are_one_line(capsys):
    for argv in (["predict", "--no-such-option"], ["predict"], ["quantize", "u2netp"], ["nonsense"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        _assert_one_line_usage_error(exit_info.value.code, capsys.readouterr().err)


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(folder / "a.png")
    return folder


def _run_main(argv, capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def _last_line_error(code, err, expected_code, *words):
    assert code == expected_code, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    for word in words:
        assert word in errors[0], err


def test_int8_without_calibration_names_the_flag(photo_dir, tmp_path, capsys):
    code, err = _run_main(["predict", "u2netp", str(photo_dir), "-o", str(tmp_path / "out"), "--weights", "random",
                           "--backend", "openvino", "--precision", "int8"], capsys)
    _last_line_error(code, err, 2, "--calib", "--onnx")
    assert not (tmp_path / "out" / "a.png").exists()


def test_quantize_without_weights_is_a_usage_error(photo_dir, tmp_path, capsys):
    code, err = _run_main(["quantize", "u2netp", "--calib", str(photo_dir), "-o", str(tmp_path / "q.onnx")], capsys)
    _last_line_error(code, err, 2, "--weights")


def test_run_with_a_weights_file_that_does_not_exist(tmp_path, capsys):
    code, err = _run_main(["run", "u2net-ecssd", "--weights", "official", "-o", str(tmp_path / "run")], capsys)
    _last_line_error(code, err, 2, "official")
    code, err = _run_main(["run", "u2netp-ecssd", "--weights", "random", "-o", str(tmp_path / "run")], capsys)
    _last_line_error(code, err, 2, "unknown recipe")


def test_a_byte_flipped_reference_is_one_line(photo_dir, tmp_path, capsys):
    good = tmp_path / "ref.npz"
    np.savez(good, meta=np.frombuffer(b'{"format": 1, "images": []}', dtype=np.uint8), a=np.zeros(500))
    data = bytearray(good.read_bytes())
    for offset in (40, len(data) // 2):
        data[offset] ^= 0xFF
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data))
    code, err = _run_main(["compare", "u2netp", "--weights", "random", "--images", str(photo_dir),
                           "--reference", str(bad), "--backends", "onnxruntime", "--allow-few-images"], capsys)
    _last_line_error(code, err, 2, str(bad))


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux) for a private tmpfs")
def test_a_full_disk_stops_the_run_with_exit_4(photo_dir, tmp_path):
    """A real full filesystem: a 48 KiB tmpfs mounted in a private user + mount namespace."""
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=48k tmpfs {tmp_path}"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.decode().strip()}")
    images = tmp_path / "in"
    images.mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):  # noise compresses badly: the masks of a few fill 48 KiB
        Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(images / f"{i}.png")
    mount = tmp_path / "small"
    mount.mkdir()
    command = (f"mount -t tmpfs -o size=48k tmpfs {mount} && exec {sys.executable} -m segdeploy.cli.main predict "
               f"u2netp {images} -o {mount}/out --weights random --backend onnxruntime --quiet")
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(["unshare", "-rm", "sh", "-c", command], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "no space left" in errors[0], result.stderr
