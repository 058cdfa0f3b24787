"""Layout registry, CLI dataset flags, id lists and the upstream split functions."""

from __future__ import annotations

import argparse
import math
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers_datasets import make_dsb2018_tree, make_ecssd_tree
from segdeploy.data import (
    DatasetError,
    add_dataset_arguments,
    get_layout,
    layout_descriptions,
    layout_from_args,
    list_layouts,
    read_id_list,
)
from segdeploy.data.splits import sklearn_val_indices


def test_registry_names():
    names = list_layouts()
    for expected in ("ecssd", "duts-te", "msra-b", "msra10k", "hku-is", "pascal-s", "dut-omron", "pairs",
                     "carvana", "dsb2018", "voc2012"):
        assert expected in names
    assert set(layout_descriptions()) == set(names)


def test_aliases_and_unknown(tmp_path):
    root = make_ecssd_tree(tmp_path / "ECSSD", 2)
    assert get_layout("ECSSD", root).name == "ecssd"
    raw = make_dsb2018_tree(tmp_path / "dsb", 2)
    with pytest.raises(DatasetError, match="prepared"):
        get_layout("dsb2018_96", raw)  # alias forces the prepared variant
    with pytest.raises(DatasetError, match="unknown dataset layout 'coco'.*ecssd"):
        get_layout("coco", root)
    with pytest.raises(DatasetError, match="unknown option.*val_percent"):
        get_layout("ecssd", root, val_percent=0.1)


def test_layout_from_args(tmp_path):
    root = make_ecssd_tree(tmp_path / "ECSSD", 5)
    parser = argparse.ArgumentParser()
    add_dataset_arguments(parser)
    args = parser.parse_args(["--dataset", "ecssd", "--data-root", str(root), "--limit", "2"])
    assert layout_from_args(args).ids == ["0001", "0002"]
    args = parser.parse_args(["--images", str(root / "images"), "--masks", str(root / "ground_truth_mask")])
    assert layout_from_args(args).name == "pairs"
    args = parser.parse_args(["--dataset", "ecssd", "--data-root", str(root), "--split", "val"])
    with pytest.raises(DatasetError, match="no --split option"):
        layout_from_args(args)
    # options arrive as strings from `segdeploy eval --option KEY=VALUE`
    (root / "ground_truth_mask" / "0005.png").unlink()
    assert len(get_layout("ecssd", root, strict="false")) == 4
    assert len(get_layout("ecssd", root, limit="3", strict="false")) == 3
    with pytest.raises(DatasetError, match="no mask"):
        get_layout("ecssd", root, strict="true")
    args = parser.parse_args(["--dataset", "ecssd", "--data-root", str(root), "--dataset-opt", "oops"])
    with pytest.raises(DatasetError, match="KEY=VALUE"):
        layout_from_args(args)


def test_read_id_list_formats(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("\ufeffa\n  b.jpg  \n# comment\nsub/dir/c.png extra/c.png\n\nd # trailing\n")
    assert read_id_list(path) == ["a", "b", "c", "d"]
    path.write_text("a\nb\na\n")
    with pytest.raises(DatasetError, match=r"duplicate id.*a \(lines 1 and 3\)"):
        read_id_list(path)
    path.write_text("\n# nothing\n")
    with pytest.raises(DatasetError, match="holds no ids"):
        read_id_list(path)
    with pytest.raises(DatasetError, match="does not exist"):
        read_id_list(tmp_path / "missing.txt")


@pytest.mark.parametrize("n", [5, 7, 10, 134, 670])
def test_sklearn_split_reimplementation(n):
    train_test_split = pytest.importorskip("sklearn.model_selection").train_test_split
    _, expected = train_test_split(list(range(n)), test_size=0.2, random_state=41)
    got = sklearn_val_indices(n, 0.2, 41)
    assert got == list(expected) and len(got) == math.ceil(0.2 * n)
    assert np.unique(got).size == len(got)


def test_sklearn_split_recorded_values():
    # Test parts printed by scikit-learn 1.9.1's train_test_split(list(range(n)), test_size=0.2,
    # random_state=41), kept so the check also runs where scikit-learn is not installed.
    assert sklearn_val_indices(7) == [5, 1]
    assert sklearn_val_indices(10) == [5, 6]
    got = sklearn_val_indices(670)
    assert len(got) == 134 and got[:12] == [139, 213, 283, 397, 295, 649, 632, 143, 361, 554, 158, 433]


def test_data_import_is_light():
    code = ("import sys, segdeploy.data; "
            "print(sorted(m for m in ('torch', 'cv2', 'sklearn', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
