"""Salient-object dataset readers: pairing, folder-name variants, actionable errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers_datasets import make_ecssd_tree, make_sod_tree
from segdeploy.data import DatasetError, get_layout


def _stems(folder: Path, suffix: str) -> list[str]:
    return sorted(p.stem for p in folder.iterdir() if p.suffix == suffix)


def test_ecssd_finds_exactly_the_pairs(tmp_path):
    root = make_ecssd_tree(tmp_path / "ECSSD", 6)
    layout = get_layout("ecssd", root)
    expected = _stems(root / "images", ".jpg")
    assert layout.ids == expected and len(layout) == 6
    for sample in layout:
        assert sample.image_path == root / "images" / f"{sample.id}.jpg"
        assert sample.mask_path == root / "ground_truth_mask" / f"{sample.id}.png"
    assert layout.describe()["num_samples"] == 6


def test_ecssd_load_returns_rgb_and_gray_mask(tmp_path):
    root = make_ecssd_tree(tmp_path / "ECSSD", 4)
    layout = get_layout("ecssd", root)
    for sample in layout:
        image, mask = layout.load(sample)
        written = np.asarray(Image.open(sample.mask_path))
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert image.shape[:2] == mask.shape
        assert mask.dtype == np.uint8 and np.array_equal(mask, written)
        assert set(np.unique(mask)) == {0, 255}
    assert layout.foreground(np.array([128, 129], dtype=np.uint8)).tolist() == [False, True]


def test_root_may_be_the_parent_folder_and_names_any_case(tmp_path):
    make_sod_tree(tmp_path / "datasets" / "ecssd", 3, image_dir="Images", mask_dir="Ground_Truth_Mask")
    layout = get_layout("ecssd", tmp_path / "datasets")
    assert len(layout) == 3
    assert layout.samples[0].image_path.parent.name == "Images"


@pytest.mark.parametrize(
    "name, top, image_dir, mask_dir, image_ext",
    [
        ("duts-te", "DUTS-TE", "DUTS-TE-Image", "DUTS-TE-Mask", ".jpg"),
        ("duts-tr", "DUTS-TR", "DUTS-TR-Image", "DUTS-TR-Mask", ".jpg"),
        ("dut-omron", "DUT-OMRON", "DUT-OMRON-image", "pixelwiseGT-new-PNG", ".jpg"),
        ("hku-is", "HKU-IS", "imgs", "gt", ".png"),
        ("pascal-s", "PASCAL-S", "datasets/imgs/pascal", "datasets/masks/pascal", ".jpg"),
        ("msra10k", "MSRA10K_Imgs_GT", "Imgs", "Imgs", ".jpg"),
        ("msra-b", "MSRA-B", "", "", ".jpg"),
        ("ecssd", "ECSSD", "Imgs", "GT", ".jpg"),  # common re-packaging
    ],
)
def test_distributed_folder_names(tmp_path, name, top, image_dir, mask_dir, image_ext):
    dataset = tmp_path / "data" / top
    make_sod_tree(dataset, 5, image_dir=image_dir or ".", mask_dir=mask_dir or ".", image_ext=image_ext)
    for root in (dataset, tmp_path / "data"):
        layout = get_layout(name, root)
        assert layout.ids == [f"{i:04d}" for i in range(1, 6)], root
        for sample in layout:
            assert sample.image_path.suffix == image_ext and sample.mask_path.suffix == ".png"
            assert sample.image_path != sample.mask_path


def test_graded_masks_keep_their_values(tmp_path):
    root = make_sod_tree(tmp_path / "PASCAL-S", 2, image_dir="Imgs", mask_dir="GT", graded=True)
    layout = get_layout("pascal-s", root)
    _, mask = layout.load(layout[0])
    assert len(np.unique(mask)) > 10  # not binarised by the reader; the metric thresholds at > 128


def test_missing_mask_is_named(tmp_path):
    root = make_ecssd_tree(tmp_path / "ECSSD", 6)
    (root / "ground_truth_mask" / "0003.png").unlink()
    with pytest.raises(DatasetError) as info:
        get_layout("ecssd", root)
    message = str(info.value)
    assert "0003.jpg" in message and "1 of 6 images have no mask" in message
    assert str(root / "ground_truth_mask") in message and "--skip-unmatched" in message


def test_mask_without_image_is_named(tmp_path):
    root = make_ecssd_tree(tmp_path / "ECSSD", 4)
    shutil.copy(root / "ground_truth_mask" / "0001.png", root / "ground_truth_mask" / "extra_9.png")
    with pytest.raises(DatasetError, match=r"1 mask\(s\) have no image .*extra_9\.png"):
        get_layout("ecssd", root)


def test_unmatched_stems_list_first_few_and_count(tmp_path):
    root = make_ecssd_tree(tmp_path / "ECSSD", 8)
    for path in (root / "ground_truth_mask").iterdir():
        path.rename(path.with_name("gt_" + path.name))
    with pytest.raises(DatasetError) as info:
        get_layout("ecssd", root)
    message = str(info.value)
    assert "8 of 8 images have no mask" in message and "(8 in all)" in message
    assert "0001.jpg, 0002.jpg, 0003.jpg, 0004.jpg, 0005.jpg" in message
    assert "no stem matches at all" in message


def test_skip_unmatched_records_what_was_skipped(tmp_path):
    root = make_ecssd_tree(tmp_path / "ECSSD", 5)
    (root / "ground_truth_mask" / "0002.png").unlink()
    layout = get_layout("ecssd", root, strict=False)
    assert layout.ids == ["0001", "0003", "0004", "0005"]
    assert layout.describe()["skipped"] == [{"file": "0002.jpg", "reason": f"no mask in {root / 'ground_truth_mask'}"}]


def test_images_without_masks_allowed_for_prediction(tmp_path):
    root = make_ecssd_tree(tmp_path / "ECSSD", 3)
    (root / "ground_truth_mask" / "0002.png").unlink()
    layout = get_layout("ecssd", root, require_masks=False)
    assert len(layout) == 3
    image, mask = layout.load(layout[1])
    assert mask is None and image.shape[2] == 3


def test_wrong_root_says_what_was_expected_and_found(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(DatasetError) as info:
        get_layout("duts-te", tmp_path)
    message = str(info.value)
    assert "DUTS-TE-Image/ + DUTS-TE-Mask/" in message
    assert "photos/" in message and "readme.txt" in message


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        get_layout("ecssd", tmp_path / "nope")


def test_ambiguous_stems_raise(tmp_path):
    root = make_ecssd_tree(tmp_path / "ECSSD", 3)
    shutil.copy(root / "images" / "0001.jpg", root / "images" / "0001.png")
    with pytest.raises(DatasetError, match=r"ambiguous.*0001\.jpg / 0001\.png"):
        get_layout("ecssd", root)


def test_mask_size_mismatch_is_reported_on_load(tmp_path):
    root = make_ecssd_tree(tmp_path / "ECSSD", 2)
    Image.new("L", (7, 5)).save(root / "ground_truth_mask" / "0001.png")
    layout = get_layout("ecssd", root)
    with pytest.raises(DatasetError, match=r"0001\.jpg is 60x40 .* is 7x5"):
        layout.load(layout[0])


def test_limit_and_split_file(tmp_path):
    root = make_ecssd_tree(tmp_path / "ECSSD", 6)
    assert get_layout("ecssd", root, limit=2).ids == ["0001", "0002"]
    assert [s.id for s in get_layout("ecssd", root).iter(limit=3)] == ["0001", "0002", "0003"]
    ids = tmp_path / "ids.txt"
    ids.write_text("# subset\n0005.jpg\n\n0002\n")
    layout = get_layout("ecssd", root, split_file=ids)
    assert layout.ids == ["0005", "0002"]  # file order kept
    ids.write_text("0005\nmissing_1\n")
    with pytest.raises(DatasetError, match=r"1 of 2 ids in .*ids\.txt are not in the dataset.*missing_1"):
        get_layout("ecssd", root, split_file=ids)
    with pytest.raises(DatasetError, match="positive"):
        get_layout("ecssd", root, limit=0)


def test_pairs_layout(tmp_path):
    make_sod_tree(tmp_path, 4, image_dir="pics", mask_dir="labels_x")
    for path in (tmp_path / "labels_x").iterdir():
        path.rename(path.with_name(path.stem + "_mask.png"))
    layout = get_layout("pairs", tmp_path, images="pics", masks="labels_x", mask_suffix="_mask")
    assert layout.ids == ["0001", "0002", "0003", "0004"]
    assert layout.samples[0].mask_path.name == "0001_mask.png"
    with pytest.raises(DatasetError, match="no mask"):
        get_layout("pairs", tmp_path, images="pics", masks="labels_x")
    with pytest.raises(DatasetError, match="--images DIR and --masks DIR"):
        get_layout("pairs", tmp_path, images="pics")


def test_pairs_binary_encoding(tmp_path):
    make_sod_tree(tmp_path, 2, image_dir="a", mask_dir="b")
    layout = get_layout("pairs", tmp_path, images="a", masks="b", encoding="binary")
    _, mask = layout.load(layout[0])
    written = np.asarray(Image.open(layout[0].mask_path))
    assert layout.task == "binary" and np.array_equal(mask, (written > 127).astype(np.uint8))
