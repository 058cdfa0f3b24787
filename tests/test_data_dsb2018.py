"""DSB2018: raw reader, upstream val split, `segdeploy prepare dsb2018` and the prepared reader."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.helpers_datasets import dsb_ids, make_dsb2018_tree
from segdeploy.data import DatasetError, get_layout, prepare_dsb2018


def _union_pil(folder: Path) -> np.ndarray:
    masks = [np.asarray(Image.open(p).convert("L")) > 127 for p in sorted((folder / "masks").iterdir())]
    return np.logical_or.reduce(masks)


def test_raw_finds_every_sample_and_instance_mask(tmp_path):
    root = make_dsb2018_tree(tmp_path / "dsb", 6)
    layout = get_layout("dsb2018", root, split="all")
    assert layout.info["variant"] == "raw"
    assert layout.ids == sorted(dsb_ids(6))
    for sample in layout:
        folder = root / "stage1_train" / sample.id
        assert sample.image_path == folder / "images" / f"{sample.id}.png"
        assert set(sample.mask_paths) == set((folder / "masks").iterdir())
        image, mask = layout.load(sample)
        assert image.shape[2] == 3 and image.dtype == np.uint8
        assert mask.dtype == np.uint8 and np.array_equal(mask.astype(bool), _union_pil(folder))
    # root may also be stage1_train itself
    assert get_layout("dsb2018", root / "stage1_train", split="all").ids == layout.ids


def test_raw_val_split_is_sklearns(tmp_path):
    sklearn_split = pytest.importorskip("sklearn.model_selection").train_test_split
    root = make_dsb2018_tree(tmp_path / "dsb", 7)
    ids = sorted(dsb_ids(7))
    _, expected = sklearn_split(ids, test_size=0.2, random_state=41)
    val = get_layout("dsb2018", root)  # split=val is the default
    train = get_layout("dsb2018", root, split="train")
    assert val.ids == list(expected)
    assert sorted(train.ids + val.ids) == ids and set(train.ids).isdisjoint(val.ids)


def test_raw_errors_name_the_sample(tmp_path):
    root = make_dsb2018_tree(tmp_path / "dsb", 4)
    bad = sorted(dsb_ids(4))[1]
    shutil.rmtree(root / "stage1_train" / bad / "masks")
    with pytest.raises(DatasetError, match=rf"1 image\(s\) without any instance mask: {bad}"):
        get_layout("dsb2018", root, split="all")
    assert len(get_layout("dsb2018", root, split="all", strict=False)) == 3
    other = sorted(dsb_ids(4))[2]
    (root / "stage1_train" / other / "images" / f"{other}.png").unlink()
    with pytest.raises(DatasetError, match=rf"without their image: {other}"):
        get_layout("dsb2018", root, split="all")


def test_wrong_root(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DatasetError) as info:
        get_layout("dsb2018", tmp_path)
    message = str(info.value)
    assert "stage1_train/<id>/images/<id>.png" in message and "masks/0" in message and "stuff/" in message


def _direct(folder: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """preprocess_dsb2018.py's computation, restated: BGR read, resize, float mask union, x255."""
    sample_id = folder.name
    img = cv2.imread(str(folder / "images" / f"{sample_id}.png"))
    mask = np.zeros(img.shape[:2])
    for path in (folder / "masks").iterdir():
        mask[cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 127] = 1
    return cv2.resize(img, (size, size)), (cv2.resize(mask, (size, size)) * 255).astype("uint8")


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_ino) for p in folder.rglob("*") if p.is_file()}


def test_prepare_matches_direct_computation_and_is_idempotent(tmp_path):
    raw = make_dsb2018_tree(tmp_path / "raw", 6)
    out = tmp_path / "dsb2018_96"
    report = prepare_dsb2018(raw, out, workers=2)
    assert sorted(report.written) == sorted(dsb_ids(6)) and report.wrote_anything
    for sample_id in dsb_ids(6):
        img, mask = _direct(raw / "stage1_train" / sample_id, 96)
        assert np.array_equal(cv2.imread(str(out / "images" / f"{sample_id}.png"), cv2.IMREAD_UNCHANGED), img)
        stored = cv2.imread(str(out / "masks" / "0" / f"{sample_id}.png"), cv2.IMREAD_UNCHANGED)
        assert stored.dtype == np.uint8 and np.array_equal(stored, mask)
    assert (out / "val_ids.txt").read_text().split() == get_layout("dsb2018", raw).ids  # same rule on raw ids
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]

    before = _snapshot(out)
    again = prepare_dsb2018(raw, out)
    assert not again.wrote_anything and len(again.unchanged) == 6
    assert _snapshot(out) == before


def test_prepare_cli_says_nothing_was_written(tmp_path, capsys):
    from segdeploy.cli import prepare

    raw = make_dsb2018_tree(tmp_path / "raw", 3)
    parser = argparse.ArgumentParser()
    prepare.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["prepare", "dsb2018", "--data-root", str(raw), "-o", str(tmp_path / "out"), "--size", "32"])
    assert args.func(args) == 0
    assert "wrote 3 of 3 samples" in capsys.readouterr().out
    assert args.func(args) == 0
    assert "nothing written" in capsys.readouterr().out
    assert cv2.imread(str(next((tmp_path / "out" / "images").iterdir()))).shape == (32, 32, 3)
    # a different size into the same folder is refused, not silently mixed
    args = parser.parse_args(["prepare", "dsb2018", "--data-root", str(raw), "-o", str(tmp_path / "out")])
    assert args.func(args) == 2
    assert "--force" in capsys.readouterr().err


def test_prepare_recomputes_a_missing_output(tmp_path):
    raw = make_dsb2018_tree(tmp_path / "raw", 3)
    out = tmp_path / "out"
    prepare_dsb2018(raw, out)
    victim = dsb_ids(3)[0]
    (out / "masks" / "0" / f"{victim}.png").unlink()
    report = prepare_dsb2018(raw, out)
    assert report.written == [victim] and not report.val_ids_written


def test_prepared_reader_uses_val_ids(tmp_path):
    raw = make_dsb2018_tree(tmp_path / "raw", 6)
    out = tmp_path / "out"
    prepare_dsb2018(raw, out)
    layout = get_layout("dsb2018", out)
    assert layout.info["variant"] == "prepared" and layout.mask_encoding == "gray"
    assert layout.ids == (out / "val_ids.txt").read_text().split()
    assert str(out / "val_ids.txt") in layout.info["split_rule"]
    image, mask = layout.load(layout[0])
    assert image.shape == (96, 96, 3) and mask.shape == (96, 96)
    # foreground rule = upstream's target/255 > 0.5
    assert layout.foreground(np.array([127, 128], dtype=np.uint8)).tolist() == [False, True]
    # a fixed list (seed guide 002 ships one) replaces the computed one
    fixed = sorted(dsb_ids(6))[:3]
    (out / "val_ids.txt").write_text("\n".join(fixed) + "\n")
    assert get_layout("dsb2018", out).ids == fixed
    assert len(get_layout("dsb2018", out, split="train")) == 3
    assert len(get_layout("dsb2018", out, split="all")) == 6


def test_prepared_reader_unmatched(tmp_path):
    raw = make_dsb2018_tree(tmp_path / "raw", 3)
    out = tmp_path / "out"
    prepare_dsb2018(raw, out)
    victim = dsb_ids(3)[1]
    os.remove(out / "masks" / "0" / f"{victim}.png")
    with pytest.raises(DatasetError, match=rf"1 of 3 images have no mask .*{victim}\.png"):
        get_layout("dsb2018", out, split="all")
