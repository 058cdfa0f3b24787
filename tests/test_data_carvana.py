"""Carvana reader: GIF masks as 0/1, milesial's seeded split, errors."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers_datasets import carvana_ids, make_carvana_tree
from segdeploy.data import DatasetError, get_layout


def test_finds_every_pair(tmp_path):
    root = make_carvana_tree(tmp_path / "carvana", 8)
    layout = get_layout("carvana", root)
    assert layout.ids == sorted(carvana_ids(8))
    for sample in layout:
        assert sample.image_path == root / "train" / f"{sample.id}.jpg"
        assert sample.mask_path == root / "train_masks" / f"{sample.id}_mask.gif"


def test_gif_mask_is_binary_palette_indices(tmp_path):
    root = make_carvana_tree(tmp_path / "carvana", 3)
    layout = get_layout("carvana", root)
    for sample in layout:
        image, mask = layout.load(sample)
        gif = Image.open(sample.mask_path)
        assert gif.mode == "P"
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
        assert np.array_equal(mask, np.asarray(gif))
        assert image.shape[:2] == mask.shape
    assert layout.task == "binary" and layout.mask_encoding == "binary"


def test_png_masks_with_255_become_0_1(tmp_path):
    root = make_carvana_tree(tmp_path / "carvana", 2)
    sample = get_layout("carvana", root)[0]
    indices = np.asarray(Image.open(sample.mask_path))
    sample.mask_path.unlink()
    Image.fromarray(indices * 255).save(root / "train_masks" / f"{sample.id}_mask.png")
    layout = get_layout("carvana", root)
    assert np.array_equal(layout.load(layout[0])[1], indices)


def _expected_val(ids, val_percent, seed):
    # Independent statement of milesial train.py's split: random_split draws randperm(n) from the
    # seeded generator and gives the last n_val positions to the validation subset.
    n = len(ids)
    n_val = int(n * val_percent)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return [ids[i] for i in perm[n - n_val:]]


@pytest.mark.parametrize("n, val_percent, seed", [(20, 0.1, 0), (12, 0.25, 0), (12, 0.25, 3)])
def test_seeded_split_matches_random_split(tmp_path, n, val_percent, seed):
    root = make_carvana_tree(tmp_path / "carvana", n)
    val = get_layout("carvana", root, split="val", val_percent=val_percent, seed=seed)
    train = get_layout("carvana", root, split="train", val_percent=val_percent, seed=seed)
    assert val.ids == _expected_val(sorted(carvana_ids(n)), val_percent, seed)
    assert len(val) == int(n * val_percent)
    assert set(val.ids).isdisjoint(train.ids) and sorted(val.ids + train.ids) == sorted(carvana_ids(n))
    # reproducible: a second scan gives the same split
    assert get_layout("carvana", root, split="val", val_percent=val_percent, seed=seed).ids == val.ids
    assert "random_split" in val.describe()["split_rule"]


def test_string_options_from_the_command_line(tmp_path):
    root = make_carvana_tree(tmp_path / "carvana", 12)
    a = get_layout("carvana", root, split="val", val_percent="0.25", seed="3")
    b = get_layout("carvana", root, split="val", val_percent=0.25, seed=3)
    assert a.ids == b.ids


def test_listdir_order_split(tmp_path):
    root = make_carvana_tree(tmp_path / "carvana", 12)
    order = [os.path.splitext(name)[0] for name in os.listdir(root / "train")]
    layout = get_layout("carvana", root, split="val", val_percent=0.25, order="listdir")
    assert layout.ids == _expected_val(order, 0.25, 0)


def test_split_file_overrides_split(tmp_path):
    root = make_carvana_tree(tmp_path / "carvana", 6)
    ids = carvana_ids(6)
    listing = tmp_path / "val.txt"
    listing.write_text(f"{ids[4]}.jpg\n{ids[1]}_mask.gif\n")
    # ids are image stems: a mask file name (<id>_mask.gif) names no sample
    with pytest.raises(DatasetError, match="not in the dataset"):
        get_layout("carvana", root, split_file=listing)
    listing.write_text(f"{ids[4]}\n{ids[1]}\n")
    assert get_layout("carvana", root, split="val", split_file=listing).ids == [ids[4], ids[1]]


def test_accepts_seed_and_milesial_layouts(tmp_path):
    src = make_carvana_tree(tmp_path / "kaggle", 4)
    seed = tmp_path / "test"
    shutil.copytree(src / "train", seed / "images")
    shutil.copytree(src / "train_masks", seed / "masks")
    assert len(get_layout("carvana", seed)) == 4
    milesial = tmp_path / "repo"
    shutil.copytree(src / "train", milesial / "data" / "imgs")
    shutil.copytree(src / "train_masks", milesial / "data" / "masks")
    assert len(get_layout("carvana", milesial)) == 4


def test_missing_mask_and_wrong_root(tmp_path):
    root = make_carvana_tree(tmp_path / "carvana", 5)
    victim = sorted(carvana_ids(5))[2]
    (root / "train_masks" / f"{victim}_mask.gif").unlink()
    with pytest.raises(DatasetError, match=rf"1 of 5 images have no mask .*{victim}\.jpg"):
        get_layout("carvana", root)
    with pytest.raises(DatasetError) as info:
        get_layout("carvana", root / "train")
    message = str(info.value)
    assert "train/ + train_masks/" in message and f"{victim}.jpg" in message


def test_bad_split_name(tmp_path):
    root = make_carvana_tree(tmp_path / "carvana", 2)
    with pytest.raises(DatasetError, match="split must be all, train or val"):
        get_layout("carvana", root, split="test")
