"""Outputs never alias inputs, through symlinks and hard links, in one-file mode too (issue 23
item 4), and file names are data: names that are not UTF-8 go through predict, the manifest and
the summary, and a rerun skips them (item 5)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segdeploy.cli.main import main

RUN = ["--weights", "random", "--backend", "onnxruntime", "--quiet"]


def _photo(path: Path, value: int = 90) -> Path:
    Image.fromarray(np.full((30, 40, 3), value, np.uint8)).save(path)
    return path


def _refused(capsys, argv, photo: Path) -> None:
    before = photo.read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "would replace" in err and "Traceback" not in err, err
    assert photo.read_bytes() == before  # the photo is kept


def test_one_file_mode_never_writes_over_its_input(tmp_path, capsys):
    photo = _photo(tmp_path / "p.png")
    _refused(capsys, ["predict", "u2netp", str(photo), "-o", str(photo), "--overwrite", *RUN], photo)
    link = tmp_path / "link.png"
    link.symlink_to(photo)
    _refused(capsys, ["predict", "u2netp", str(photo), "-o", str(link), "--overwrite", *RUN], photo)
    _refused(capsys, ["predict", "u2netp", str(link), "-o", str(photo), "--overwrite", *RUN], photo)
    hard = tmp_path / "hard.png"
    os.link(photo, hard)
    _refused(capsys, ["predict", "u2netp", str(photo), "-o", str(hard), "--overwrite", *RUN], photo)


def test_folder_mode_sees_a_hard_link_to_an_input(tmp_path):
    from segdeploy.core.errors import UsageError
    from segdeploy.jobs.outputs import plan_outputs

    photos = tmp_path / "in"
    photos.mkdir()
    photo = _photo(photos / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    os.link(photo, out / "a.png")  # the mask's path is another name of the photo
    with pytest.raises(UsageError, match="would replace the input"):
        plan_outputs([(photo, Path("a.png"))], out)


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems refuse names that are not UTF-8")
def test_names_that_are_not_utf8_are_data(tmp_path, capsys):
    photos = tmp_path / "in"
    photos.mkdir()
    names = [b"\xff\xfe.png", b"caf\xe9.png", b"plain.png"]
    for i, raw in enumerate(names):
        _photo(Path(os.fsdecode(bytes(photos) + b"/" + raw)), 60 + 40 * i)
    (Path(os.fsdecode(bytes(photos) + b"/bad\xff.png"))).write_bytes(b"not an image")
    out = tmp_path / "out"
    summary = tmp_path / "summary.json"
    assert main(["predict", "u2netp", str(photos), "-o", str(out), "--json", str(summary), *RUN]) == 1
    err = capsys.readouterr().err
    assert "UnicodeEncodeError" not in err and "Traceback" not in err
    assert "found 4, written 3, skipped 0" in " ".join(err.split())
    written = sorted(os.fsencode(p) for p in os.listdir(out) if not p.startswith("."))
    assert written == sorted(os.fsencode(os.fsdecode(n)) for n in names)
    manifest_text = (out / ".segdeploy-manifest.json").read_text(encoding="ascii")  # escaped, plain ASCII
    files = json.loads(manifest_text)["files"]
    assert {k for k, v in files.items() if v["status"] == "written"} == {os.fsdecode(n) for n in names}
    report = json.loads(summary.read_text(encoding="ascii"))
    assert [Path(f["path"]).name for f in report["failed"]] == [os.fsdecode(b"bad\xff.png")]
    # the rerun makes progress: every written name is found again and skipped
    assert main(["predict", "u2netp", str(photos), "-o", str(out), *RUN]) == 1
    assert "found 4, written 0, skipped 3" in " ".join(capsys.readouterr().err.split())


class _Payload:
    """Pickled into a checkpoint: unpickling it would create a file (code execution)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_with_pickled_code_never_runs_it(tmp_path, capsys):
    import torch

    marker = tmp_path / "pwned"
    torch.save({"state": _Payload(str(marker))}, tmp_path / "evil.pth")
    photo = _photo(tmp_path / "p.png")
    code = main(["predict", "u2netp", str(photo), "-o", str(tmp_path / "m.png"), "--weights",
                 str(tmp_path / "evil.pth"), "--backend", "torch", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert not marker.exists()
