"""Input search and special files: loops, FIFOs, dangling links, the output tree (issue 10 faults)."""

import os
import threading

import numpy as np
import pytest
from PIL import Image

from segdeploy.core.errors import ImageReadError, UsageError
from segdeploy.engine.finder import find_images
from segdeploy.engine.images import read_image
from segdeploy.jobs.outputs import plan_outputs
from tests.image_zoo import photo


def _save(path, h=12, w=16, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo(h, w, seed)).save(path)
    return path


def _finishes(fn, seconds=20):
    result = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as exc:  # re-raised in the test's thread
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "did not finish (symlink loop followed forever, or a FIFO opened?)"
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_recursive_glob_with_symlinks_to_dot_does_not_hang(tmp_path, monkeypatch):
    loop = tmp_path / "loopdir"
    _save(loop / "a.jpg")
    _save(loop / "sub" / "b.jpg")
    os.symlink(".", loop / "self1")
    os.symlink(".", loop / "self2")
    os.symlink("..", loop / "sub" / "up")
    monkeypatch.chdir(tmp_path)
    found = _finishes(lambda: find_images(["loopdir/**/*.jpg"], recursive=True))
    assert sorted(os.path.realpath(p) for p, _ in found) == sorted(
        os.path.realpath(p) for p in (loop / "a.jpg", loop / "sub" / "b.jpg"))
    folder = _finishes(lambda: find_images([loop], recursive=True))
    assert len(folder) == 2


def test_recursive_glob_keeps_subfolders_in_relative_paths(tmp_path, monkeypatch):
    _save(tmp_path / "shots" / "x.jpg")
    _save(tmp_path / "shots" / "deeper" / "x.jpg", seed=1)
    monkeypatch.chdir(tmp_path)
    rels = sorted(rel.as_posix() for _, rel in find_images(["shots/**/*.jpg"], recursive=True))
    assert rels == ["deeper/x.jpg", "x.jpg"]  # two inputs named x.jpg, two paths


def test_two_folders_mirror_their_names(tmp_path):
    _save(tmp_path / "dirA" / "x.jpg")
    _save(tmp_path / "dirB" / "x.jpg", seed=1)
    found = find_images([tmp_path / "dirA", tmp_path / "dirB"])
    assert sorted(rel.as_posix() for _, rel in found) == ["dirA/x.jpg", "dirB/x.jpg"]
    one = find_images([tmp_path / "dirA"])
    assert [rel.as_posix() for _, rel in one] == ["x.jpg"]  # a single folder keeps the flat layout
    files = find_images([tmp_path / "dirA" / "x.jpg", tmp_path / "dirB" / "x.jpg"])
    assert sorted(rel.as_posix() for _, rel in files) == ["dirA/x.jpg", "dirB/x.jpg"]


def test_output_tree_is_not_searched(tmp_path):
    _save(tmp_path / "photos" / "a.png")
    _save(tmp_path / "photos" / "masks" / "a.png")
    found = find_images([tmp_path / "photos"], recursive=True, exclude=[tmp_path / "photos" / "masks"])
    assert [rel.as_posix() for _, rel in found] == ["a.png"]


def test_unavoidable_collision_and_input_replacement_are_refused(tmp_path):
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    with pytest.raises(UsageError, match="both be written"):
        plan_outputs([(a, a.relative_to(tmp_path)), (b, a.relative_to(tmp_path))], tmp_path / "out")
    src = _save(tmp_path / "out" / "m.png")
    with pytest.raises(UsageError, match="would replace the input"):
        plan_outputs([(src, src.relative_to(tmp_path / "out"))], tmp_path / "out")


def _specials(folder):
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "pipe.jpg")
    os.symlink(folder / "missing.jpg", folder / "dangling.jpg")
    os.symlink("loop2.png", folder / "loop1.png")
    os.symlink("loop1.png", folder / "loop2.png")
    return {"pipe.jpg": "FIFO", "dangling.jpg": "dangling", "loop1.png": "loop", "loop2.png": "loop"}


def test_special_files_fail_by_name_without_blocking(tmp_path):
    expected = _specials(tmp_path)
    for name, word in expected.items():
        with pytest.raises(ImageReadError) as info:
            _finishes(lambda: read_image(tmp_path / name), seconds=10)
        assert name in str(info.value) and word in info.value.reason
    # inside a folder they are kept as inputs (and then fail, counted), never silently dropped
    _save(tmp_path / "good.png")
    names = sorted(p.name for p, _ in find_images([tmp_path]))
    assert names == sorted([*expected, "good.png"])
    # named on the command line they are inputs too, not "no such file"
    assert [p.name for p, _ in find_images([tmp_path / "dangling.jpg"])] == ["dangling.jpg"]


def test_pixel_limit_names_file_limit_and_option(tmp_path):
    path = tmp_path / "wide.png"
    Image.fromarray(np.zeros((10, 3000), np.uint8)).save(path)
    with pytest.raises(ImageReadError) as info:
        read_image(path, max_pixels=20_000)
    assert "wide.png" in str(info.value) and "--max-pixels" in info.value.reason
    assert "30,000 pixels" in info.value.reason and "limit of 20,000 pixels" in info.value.reason
    assert read_image(path, max_pixels=None).shape == (10, 3000, 3)
