"""VOC2012 reader: split files, palette masks read as class indices (255 kept), root variants."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from tests.helpers_datasets import make_voc_tree, voc_ids, voc_palette
from segdeploy.data import DatasetError, get_layout


def test_val_split_in_file_order(tmp_path):
    root = make_voc_tree(tmp_path, 6)
    layout = get_layout("voc2012", root)
    listed = (root / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").read_text().split()
    assert layout.ids == listed and listed != sorted(listed)
    voc = root / "VOCdevkit" / "VOC2012"
    for sample in layout:
        assert sample.image_path == voc / "JPEGImages" / f"{sample.id}.jpg"
        assert sample.mask_path == voc / "SegmentationClass" / f"{sample.id}.png"
    assert len(get_layout("voc2012", root, split="train")) == 3
    assert len(get_layout("voc2012", root, split="trainval")) == 6


def test_palette_mask_read_as_indices_with_255(tmp_path):
    root = make_voc_tree(tmp_path, 2)
    voc = root / "VOCdevkit" / "VOC2012"
    sample_id = voc_ids(2)[0]
    labels = np.zeros((40, 60), dtype=np.uint8)
    labels[5:20, 10:30] = 15  # person: palette colour (192, 128, 128)
    labels[25:35, 35:55] = 7  # car
    labels[4, 9:31] = 255
    png = Image.frombytes("P", (60, 40), labels.tobytes())
    png.putpalette(voc_palette())
    png.save(voc / "SegmentationClass" / f"{sample_id}.png")
    layout = get_layout("voc2012", root, split="trainval")
    image, mask = layout.load(layout[layout.ids.index(sample_id)])
    assert mask.ndim == 2 and mask.dtype == np.uint8
    assert np.array_equal(mask, labels)
    assert layout.ignore_index == 255 and layout.num_classes == 21 and layout.task == "semantic"
    # an RGB rendering of the same labels maps back to the same ids
    png.convert("RGB").save(voc / "SegmentationClass" / f"{sample_id}.png")
    assert np.array_equal(layout.load_mask(layout[layout.ids.index(sample_id)]), labels)


def test_generated_masks_hold_class_boundary_and_background(tmp_path):
    root = make_voc_tree(tmp_path, 4)
    layout = get_layout("voc2012", root, split="trainval")
    for index, sample in enumerate(layout):
        values = set(np.unique(layout.load(sample)[1]).tolist())
        assert values == {0, 255, 1 + voc_ids(4).index(sample.id) % 20}


@pytest.mark.parametrize("relative", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_root_variants(tmp_path, relative):
    root = make_voc_tree(tmp_path, 4)
    assert len(get_layout("voc", root / relative)) == 2


def test_wseg_data_folder_and_file_list(tmp_path):
    make_voc_tree(tmp_path / "data" / "voc", 6)
    listing = tmp_path / "val_voc.txt"
    ids = voc_ids(6)
    listing.write_text(
        "".join(f"voc/VOCdevkit/VOC2012/JPEGImages/{i}.jpg voc/VOCdevkit/VOC2012/SegmentationClass/{i}.png\n" for i in ids[3:])
    )
    layout = get_layout("voc2012", tmp_path / "data", split_file=listing)
    assert layout.ids == ids[3:]


def test_missing_files_and_bad_split(tmp_path):
    root = make_voc_tree(tmp_path, 6)
    voc = root / "VOCdevkit" / "VOC2012"
    val = (voc / "ImageSets/Segmentation/val.txt").read_text().split()
    (voc / "SegmentationClass" / f"{val[0]}.png").unlink()
    with pytest.raises(DatasetError, match=rf"1 listed id\(s\) have no SegmentationClass/<id>.png: {val[0]}"):
        get_layout("voc2012", root)
    (voc / "JPEGImages" / f"{val[1]}.jpg").unlink()
    with pytest.raises(DatasetError, match=rf"no JPEGImages/<id>.jpg: {val[1]}"):
        get_layout("voc2012", root)
    assert len(get_layout("voc2012", root, strict=False)) == 1
    with pytest.raises(DatasetError, match="available splits: train, trainval, val"):
        get_layout("voc2012", root, split="test")


def test_out_of_range_label_is_reported(tmp_path):
    root = make_voc_tree(tmp_path, 2)
    voc = root / "VOCdevkit" / "VOC2012"
    sample_id = voc_ids(2)[0]
    Image.fromarray(np.full((40, 60), 30, dtype=np.uint8), mode="L").save(voc / "SegmentationClass" / f"{sample_id}.png")
    layout = get_layout("voc2012", root, split="trainval")
    with pytest.raises(DatasetError, match=r"value\(s\) \[30\] outside the 21 class ids"):
        layout.load(layout[0])


def test_wrong_root(tmp_path):
    root = make_voc_tree(tmp_path / "x", 2)
    shutil.rmtree(root / "VOCdevkit" / "VOC2012" / "JPEGImages")
    with pytest.raises(DatasetError) as info:
        get_layout("voc2012", root)
    assert "JPEGImages/" in str(info.value) and "VOCdevkit/" in str(info.value)
