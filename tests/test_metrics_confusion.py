"""Confusion-matrix mIoU: hand-computed cases (ignore label, absent classes) and torchmetrics agreement."""

from __future__ import annotations

import numpy as np
import pytest

from segdeploy.tasks.metrics import Metric
from segdeploy.tasks.metrics.confusion import VOC_CLASSES, ConfusionMatrix

torch = pytest.importorskip("torch")
tmc = pytest.importorskip("torchmetrics.functional.classification")


def test_hand_computed_with_ignore_label():
    gt = np.array([[0, 0, 1], [1, 2, 255]], np.uint8)
    pred = np.array([[0, 1, 1], [1, 2, 0]], np.uint8)  # the last pixel is ignored whatever it says
    m = ConfusionMatrix(num_classes=3, ignore_index=255, class_names=("bg", "a", "b"))
    m.update(pred, gt)
    expected = np.array([[1, 1, 0], [0, 2, 0], [0, 0, 1]])
    np.testing.assert_array_equal(m.matrix, expected)
    r = m.compute()
    # bg: TP 1, FN 1, FP 0 -> 1/2; a: TP 2, FP 1 -> 2/3; b: 1/1
    assert r["IoU/bg"] == pytest.approx(1 / 2)
    assert r["IoU/a"] == pytest.approx(2 / 3)
    assert r["IoU/b"] == pytest.approx(1.0)
    assert r["mIoU"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert r["mIoU_fg"] == pytest.approx((2 / 3 + 1) / 2)
    assert r["pixel_accuracy"] == pytest.approx(4 / 5)
    assert m.count == 1


def test_absent_class_scores_zero_and_is_kept_in_the_mean():
    gt = np.array([[0, 1], [1, 0]])
    pred = np.array([[0, 1], [1, 0]])
    m = ConfusionMatrix(num_classes=4, ignore_index=255)
    m.update(pred, gt)
    r = m.compute()
    assert [r[f"IoU/{i}"] for i in range(4)] == [1.0, 1.0, 0.0, 0.0]
    assert r["mIoU"] == 0.5  # upstream eval_seg: eps-guarded 0 for classes 2 and 3
    assert r["mIoU_fg"] == pytest.approx(1 / 3)
    assert r["mIoU_present"] == 1.0


def test_accumulates_over_images_and_batches():
    rng = np.random.default_rng(2)
    gts = rng.integers(0, 5, (4, 7, 6))
    preds = rng.integers(0, 5, (4, 7, 6))
    one, seq = ConfusionMatrix(5, ignore_index=None), ConfusionMatrix(5, ignore_index=None)
    one.update(preds, gts)
    for p, g in zip(preds, gts):
        seq.update(p, g)
    np.testing.assert_array_equal(one.matrix, seq.matrix)
    assert one.count == seq.count == 4
    assert one.matrix.sum() == gts.size


def test_agreement_with_torchmetrics_voc_sized():
    rng = np.random.default_rng(0)
    m = ConfusionMatrix(num_classes=21, ignore_index=255)
    all_p, all_t = [], []
    for _ in range(12):
        h, w = (int(v) for v in rng.integers(20, 60, size=2))
        gt = rng.integers(0, 21, (h, w)).astype(np.uint8)
        gt[rng.random((h, w)) < 0.1] = 255
        # mostly right, sometimes another class: a realistic, non-uniform matrix
        pred = np.where(rng.random((h, w)) < 0.6, gt, rng.integers(0, 21, (h, w))).astype(np.uint8)
        pred[gt == 255] = rng.integers(0, 21)
        m.update(pred, gt)
        all_p.append(torch.from_numpy(pred.astype(np.int64)).flatten())
        all_t.append(torch.from_numpy(gt.astype(np.int64)).flatten())
    p, t = torch.cat(all_p), torch.cat(all_t)
    cm = tmc.multiclass_confusion_matrix(p, t, num_classes=21, ignore_index=255)
    np.testing.assert_array_equal(m.matrix, cm.numpy())
    per_class = tmc.multiclass_jaccard_index(p, t, num_classes=21, ignore_index=255, average="none").numpy()
    np.testing.assert_allclose(m.per_class_iou(), per_class, atol=1e-6)
    r = m.compute()
    macro = float(tmc.multiclass_jaccard_index(p, t, num_classes=21, ignore_index=255, average="macro"))
    assert r["mIoU"] == pytest.approx(macro, abs=1e-6)  # all classes present here
    assert r["mIoU_present"] == pytest.approx(macro, abs=1e-6)
    acc = float(tmc.multiclass_accuracy(p, t, num_classes=21, ignore_index=255, average="micro"))
    assert r["pixel_accuracy"] == pytest.approx(acc, abs=1e-6)
    assert r["mIoU_fg"] == pytest.approx(per_class[1:].mean(), abs=1e-6)
    assert {f"IoU/{n}" for n in VOC_CLASSES} <= set(r)


def test_agreement_with_torchmetrics_when_classes_are_missing():
    rng = np.random.default_rng(4)
    gt = rng.choice([0, 3, 7, 255], size=(30, 40)).astype(np.uint8)
    pred = np.where(rng.random((30, 40)) < 0.7, gt, 3).astype(np.uint8)
    pred[gt == 255] = 0
    m = ConfusionMatrix(21)
    m.update(pred, gt)
    p, t = torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(gt.astype(np.int64))
    macro = float(tmc.multiclass_jaccard_index(p, t, num_classes=21, ignore_index=255, average="macro"))
    r = m.compute()
    assert r["mIoU_present"] == pytest.approx(macro, abs=1e-6)
    assert r["mIoU"] == pytest.approx(macro * 3 / 21, abs=1e-6)


def test_protocol_and_errors():
    m = ConfusionMatrix()
    assert isinstance(m, Metric)
    assert "mIoU" in m.definition
    with pytest.raises(RuntimeError):
        m.compute()
    with pytest.raises(ValueError, match=r"\[30\].*2007_000033"):
        m.update(np.zeros((2, 2), np.uint8), np.full((2, 2), 30, np.uint8), name="2007_000033")
    with pytest.raises(ValueError, match="prediction holds values"):
        m.update(np.full((2, 2), 21, np.uint8), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        m.update(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8))
    with pytest.raises(TypeError):
        m.update(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="collides"):
        ConfusionMatrix(num_classes=21, ignore_index=3)
    # all-ignored image: counted, nothing accumulated
    m.update(np.zeros((2, 2), np.uint8), np.full((2, 2), 255, np.uint8))
    assert m.count == 1 and m.matrix.sum() == 0
    m.reset()
    assert m.count == 0 and m.matrix.sum() == 0


def test_merge_of_shards_is_exact():
    import pickle

    rng = np.random.default_rng(5)
    preds = [rng.integers(0, 4, (6, 8)) for _ in range(10)]
    targets = [np.where(rng.random((6, 8)) > 0.9, 255, rng.integers(0, 4, (6, 8))) for _ in range(10)]
    one = ConfusionMatrix(num_classes=4)
    for p, t in zip(preds, targets):
        one.update(p, t)
    a, b = ConfusionMatrix(num_classes=4), ConfusionMatrix(num_classes=4)
    for p, t in zip(preds[:3], targets[:3]):
        a.update(p, t)
    for p, t in zip(preds[3:], targets[3:]):
        b.update(p, t)
    merged = pickle.loads(pickle.dumps(b)).merge(pickle.loads(pickle.dumps(a)))
    assert merged.count == 10
    np.testing.assert_array_equal(merged.matrix, one.matrix)
    assert merged.compute() == one.compute()
    with pytest.raises(ValueError, match="num_classes"):
        merged.merge(ConfusionMatrix(num_classes=5))
