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
    # torch: these tests check the evaluation, not a backend (auto would export the model to ONNX first)
    backend = [] if "--backend" in argv else ["--backend", "torch"]
    rc = main(["eval", *map(str, argv), *backend, "--weights", "random", "--json", str(out), "--quiet"])
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
    assert rc == 1  # one input could not be read: named, recorded, the rest scored
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
    assert record["policy"]["test_time_protocol"]["crf"] is True
    assert record["policy"]["test_time_protocol"]["pad_size"] == [160, 160]


# ----------------------------------------------------------------------------- failures and exit codes
def _sorted_ids(root):
    return sorted(p.stem for p in (root / "images").glob("*.jpg"))


def test_a_runtime_raising_on_one_image_exits_4_and_scores_nothing(tmp_path, monkeypatch, capsys):
    import segdeploy.backends as backends

    root = make_ecssd_tree(tmp_path / "ECSSD", n=4)
    real_open = backends.open_runtime
    calls = {"n": 0}

    class FailsOnThird:
        def __init__(self, inner):
            self.inner, self.spec, self.name, self.precision = inner, inner.spec, inner.name, inner.precision

        def run(self, batch):
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("out of memory (injected)")
            return self.inner.run(batch)

        def describe(self):
            return self.inner.describe()

    monkeypatch.setattr(backends, "open_runtime", lambda *a, **k: FailsOnThird(real_open(*a, **k)))
    out = tmp_path / "record.json"
    rc = main(["eval", "u2netp", "--dataset", "ecssd", "--data-root", str(root), "--weights", "random",
               "--backend", "torch", "--json", str(out), "--quiet"])
    assert rc == 4
    assert not out.exists()  # nothing scored, nothing recorded as if it were
    err = " ".join(capsys.readouterr().err.split())
    third = _sorted_ids(root)[2]
    assert f"{third}.jpg" in err and "out of memory (injected)" in err and "Nothing was scored" in err


def test_unreadable_or_odd_size_masks_are_recorded_and_exit_1(tmp_path):
    from PIL import Image

    root = make_ecssd_tree(tmp_path / "ECSSD", n=4)
    ids = _sorted_ids(root)
    (root / "ground_truth_mask" / f"{ids[0]}.png").write_bytes(b"not a png")
    Image.new("L", (7, 5)).save(root / "ground_truth_mask" / f"{ids[1]}.png")
    rc, record = run_eval(tmp_path, "u2netp", "--dataset", "ecssd", "--data-root", root, "--backend", "torch")
    assert rc == 1
    assert record["images_scored"] == 2 and record["images_skipped"] == 2
    assert sorted(item["id"] for item in record["skipped"]) == sorted(ids[:2])
    assert all(item["reason"] for item in record["skipped"])
