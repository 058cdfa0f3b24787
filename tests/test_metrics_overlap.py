"""Binary Dice / IoU: hand-computed cases and agreement with torchmetrics on random masks."""

from __future__ import annotations

import numpy as np
import pytest

from segdeploy.tasks.metrics import Metric
from segdeploy.tasks.metrics.overlap import BinaryOverlap, Dice, IoU

torch = pytest.importorskip("torch")
tmc = pytest.importorskip("torchmetrics.functional.classification")


def _mask(rows: list[str]) -> np.ndarray:
    return np.array([[c == "#" for c in r] for r in rows])


A = _mask(["##.", "##.", "..."])  # 4 pixels
B = _mask([".#.", ".##", "..."])  # 3 pixels, 2 shared with A, union 5


def test_hand_computed_single_image():
    m = BinaryOverlap()
    m.update(A, B)
    r = m.compute()
    assert r["dice"] == pytest.approx((2 * 2 + 1e-6) / (4 + 3 + 1e-6), abs=1e-15)
    assert r["iou"] == pytest.approx((2 + 1e-5) / (5 + 1e-5), abs=1e-15)
    assert r["dice_pooled"] == r["dice"] and r["iou_pooled"] == r["iou"]
    assert m.count == 1


def test_empty_masks():
    empty = np.zeros((3, 3), bool)
    m = BinaryOverlap()
    m.update(empty, empty)
    assert m.compute()["dice"] == 1.0 and m.compute()["iou"] == 1.0  # milesial: empty ∩ empty = 1
    # prediction empty, target not: only the smoothing term survives
    m.reset()
    m.update(empty, A)
    assert m.compute()["dice"] == pytest.approx(1e-6 / (4 + 1e-6), abs=1e-15)
    assert m.compute()["iou"] == pytest.approx(1e-5 / (4 + 1e-5), abs=1e-15)
    # exact (unsmoothed) variants keep the empty rule
    exact = BinaryOverlap(dice_eps=0.0, iou_smooth=0.0)
    exact.update(empty, empty)
    exact.update(empty, A)
    assert exact.compute()["dice"] == 0.5 and exact.compute()["iou"] == 0.5


def test_per_image_mean_versus_pooled():
    empty = np.zeros((3, 3), bool)
    m = BinaryOverlap(dice_eps=0.0, iou_smooth=0.0)
    m.update(A, B)  # dice 4/7, iou 2/5
    m.update(A, empty)  # dice 0, iou 0
    r = m.compute()
    assert r["dice_per_image"] == pytest.approx((4 / 7 + 0) / 2)
    assert r["dice_pooled"] == pytest.approx(2 * 2 / (4 + 3 + 4 + 0))
    assert r["iou_per_image"] == pytest.approx((2 / 5 + 0) / 2)
    assert r["iou_pooled"] == pytest.approx(2 / (5 + 4))
    assert r["dice"] == r["dice_per_image"] and r["iou"] == r["iou_per_image"]


def test_input_conventions():
    probs = np.array([[0.5, 0.51], [0.2, 0.9]], np.float32)  # strict > 0.5
    target_255 = np.array([[0, 255], [0, 255]], np.uint8)
    m = IoU(iou_smooth=0.0)
    m.update(probs, target_255)
    assert m.compute()["iou"] == 1.0
    # logits: sigmoid(x) > 0.5, the 4uiiurz1 rule (x = 0 is background)
    logits = np.array([[0.0, 0.3], [-2.0, 4.0]], np.float32)
    m = IoU(logits=True, iou_smooth=0.0)
    m.update(logits, np.array([[0, 1], [0, 1]], np.float32))
    assert m.compute()["iou"] == 1.0
    # integer masks: non-zero is foreground
    m = Dice(dice_eps=0.0)
    m.update(np.array([[0, 2], [0, 1]], np.int64), np.array([[0, 1], [1, 1]], np.uint8))
    assert m.compute()["dice"] == pytest.approx(2 * 2 / (2 + 3))
    assert set(m.compute()) == {"dice", "dice_per_image", "dice_pooled"}
    with pytest.raises(TypeError):
        IoU(logits=True).update(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8))


def test_batch_update_equals_sequential():
    rng = np.random.default_rng(1)
    preds = rng.random((5, 12, 9))
    targets = rng.random((5, 12, 9)) > 0.5
    batched, seq = BinaryOverlap(), BinaryOverlap()
    batched.update(preds, targets)
    for p, t in zip(preds, targets):
        seq.update(p, t)
    assert batched.count == seq.count == 5
    assert batched.compute() == pytest.approx(seq.compute(), abs=1e-15)


def test_agreement_with_torchmetrics_on_random_masks():
    rng = np.random.default_rng(0)
    m = BinaryOverlap(dice_eps=0.0, iou_smooth=0.0)
    smoothed = BinaryOverlap()
    dices, ious, all_p, all_t = [], [], [], []
    for i in range(30):
        h, w = (int(v) for v in rng.integers(8, 64, size=2))
        prob = rng.random((h, w)).astype(np.float32)
        target = (rng.random((h, w)) < rng.uniform(0.05, 0.6)).astype(np.int64)
        m.update(prob, target)
        smoothed.update(prob, target)
        p_t, t_t = torch.from_numpy(prob), torch.from_numpy(target)
        # binary F1 == Dice; threshold semantics: torchmetrics uses p > threshold too
        dices.append(float(tmc.binary_f1_score(p_t, t_t, threshold=0.5)))
        ious.append(float(tmc.binary_jaccard_index(p_t, t_t, threshold=0.5)))
        all_p.append(p_t.flatten())
        all_t.append(t_t.flatten())
    r = m.compute()
    assert r["dice_per_image"] == pytest.approx(np.mean(dices), abs=1e-6)
    assert r["iou_per_image"] == pytest.approx(np.mean(ious), abs=1e-6)
    p_all, t_all = torch.cat(all_p), torch.cat(all_t)
    assert r["dice_pooled"] == pytest.approx(float(tmc.binary_f1_score(p_all, t_all)), abs=1e-6)
    assert r["iou_pooled"] == pytest.approx(float(tmc.binary_jaccard_index(p_all, t_all)), abs=1e-6)
    # the upstream smoothing moves these non-empty cases by far less than 1e-4
    assert smoothed.compute() == pytest.approx(r, abs=1e-4)


def test_protocol_and_errors():
    m = BinaryOverlap()
    assert isinstance(m, Metric)
    assert "dice" in m.definition and "iou_pooled" in m.definition
    with pytest.raises(RuntimeError):
        m.compute()
    with pytest.raises(ValueError, match="car_03"):
        m.update(np.zeros((4, 5)), np.zeros((5, 4)), name="car_03")
    with pytest.raises(ValueError, match="HxW"):
        m.update(np.zeros((2, 2, 2, 2)), np.zeros((2, 2, 2, 2)))


@pytest.mark.parametrize("cls", [BinaryOverlap, Dice, IoU])
def test_merge_of_shards_equals_one_pass(cls):
    import pickle

    rng = np.random.default_rng(21)
    preds = [rng.random((9, 13)).astype(np.float32) for _ in range(17)]
    targets = [(rng.random((9, 13)) > 0.7).astype(np.uint8) for _ in range(17)]
    preds[3][:] = 0
    targets[3][:] = 0  # both empty: scores exactly 1
    one = cls()
    for p, t in zip(preds, targets):
        one.update(p, t)
    shards = []
    for lo, hi in ((0, 5), (5, 6), (6, 17)):
        m = cls()
        m.update(np.stack(preds[lo:hi]), np.stack(targets[lo:hi]))  # a shard may score in batches
        shards.append(pickle.loads(pickle.dumps(m)))
    merged = shards[2].merge(shards[0]).merge(shards[1])
    assert merged.count == 17
    want = one.compute()
    got = merged.compute()
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=0, abs=1e-12), k
    with pytest.raises(ValueError, match="threshold"):
        merged.merge(cls(threshold=0.3))
    with pytest.raises(ValueError, match="merge"):
        merged.merge(Dice() if cls is not Dice else IoU())
