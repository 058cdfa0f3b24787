"""`segdeploy eval` end to end on generated dataset trees, random weights, CPU."""

import json

import numpy as np
import pytest

from segdeploy.cli.main import main
from tests.helpers_datasets import make_carvana_tree, make_dsb2018_tree, make_ecssd_tree, make_voc_tree

RECORD_FIELDS = {"model", "weights", "dataset", "images_scored", "images_skipped", "skipped", "metrics",
                 "metric_definitions", "policy", "runtime", "wall_s", "environment"}


def run_eval(tmp_path, *argv):
    out = tmp_path / "record.json"
    rc = main(["eval", *map(str, argv), "--weights", "random", "--json", str(out), "--quiet"])
    return rc, json.loads(out.read_text())


def check_record(record, model, scored):
    assert RECORD_FIELDS <= set(record)
    assert record["model"] == model and record["images_scored"] == scored
    assert record["weights"]["kind"] == "random"
    assert record["runtime"] and record["environment"]["packages"]["segdeploy"]


def test_u2netp_on_ecssd(tmp_path):
    root = make_ecssd_tree(tmp_path / "ECSSD", n=4)
    (root / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (root / "ground_truth_mask" / "broken.png").write_bytes((root / "ground_truth_mask").glob("*.png").__next__()
                                                            .read_bytes())
    saved = tmp_path / "masks"
    rc, record = run_eval(tmp_path, "u2netp", "--dataset", "ecssd", "--data-root", root, "--save-masks", saved,
                          "--batch-size", "2")
    assert rc == 0
    check_record(record, "u2netp", 4)
    assert record["images_skipped"] == 1 and record["skipped"][0]["id"] == "broken"
    assert {"maxF", "meanF", "adpF", "MAE", "Sm", "maxEm", "wFm"} <= set(record["metrics"])
    assert 0 <= record["metrics"]["MAE"] <= 1

    # the saved masks are exactly what was scored: re-scoring them gives the same numbers
    from segdeploy.data import get_layout
    from segdeploy.tasks.metrics.saliency import SaliencyMetrics

    layout = get_layout("ecssd", root, strict=False)
    metric = SaliencyMetrics()
    from PIL import Image

    for sample in layout:
        if sample.id == "broken":
            continue
        metric.update(np.asarray(Image.open(saved / f"{sample.id}.png")), layout.load_mask(sample))
    assert metric.compute()["maxF"] == pytest.approx(record["metrics"]["maxF"], abs=1e-12)


def test_unet_carvana(tmp_path):
    root = make_carvana_tree(tmp_path / "carvana", n=3)
    rc, record = run_eval(tmp_path, "unet_carvana", "--dataset", "carvana", "--data-root", root,
                          "--option", "split=all")
    assert rc == 0
    check_record(record, "unet_carvana", 3)
    assert {"dice", "dice_pooled", "iou"} <= set(record["metrics"])


def test_unetpp_on_prepared_dsb2018(tmp_path):
    raw = make_dsb2018_tree(tmp_path / "raw", n=5)
    assert main(["prepare", "dsb2018", "--data-root", str(raw), "-o", str(tmp_path / "dsb96")]) == 0
    rc, record = run_eval(tmp_path, "unetpp_dsb2018", "--dataset", "dsb2018", "--data-root", tmp_path / "dsb96",
                          "--batch-size", "4", "--option", "split=all")
    assert rc == 0
    check_record(record, "unetpp_dsb2018", 5)
    assert 0 <= record["metrics"]["iou"] <= 1


@pytest.mark.slow
def test_wseg_on_voc_multiscale_with_crf(tmp_path):
    root = make_voc_tree(tmp_path / "VOCdevkit", n=4)  # val.txt lists every 2nd id
    rc, record = run_eval(tmp_path, "wseg_voc", "--dataset", "voc2012", "--data-root", root,
                          "--pad-size", "160x160", "--protocol", "multiscale+crf")
    assert rc == 0
    check_record(record, "wseg_voc", 2)
    assert {"mIoU", "mIoU_fg", "pixel_accuracy"} <= set(record["metrics"])
    assert record["policy"]["wseg"]["crf"] is True and record["policy"]["wseg"]["pad_size"] == [160, 160]
