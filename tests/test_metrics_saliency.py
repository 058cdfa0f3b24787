"""Saliency metrics: agreement with PySODMetrics (the reference implementation) and hand-computed cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from segdeploy.tasks.metrics import Metric
from segdeploy.tasks.metrics.saliency import (
    EMeasure,
    FMeasure,
    MAE,
    SaliencyMetrics,
    SMeasure,
    WeightedFMeasure,
)

py_sod_metrics = pytest.importorskip("py_sod_metrics")
ndimage = pytest.importorskip("scipy.ndimage")

TOL = 1e-6
KEYS = ("maxF", "meanF", "adpF", "MAE", "Sm", "maxEm", "meanEm", "adpEm", "wFm")


def _blob(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth random field in [0, 1] (looks like a saliency map, not white noise)."""
    field = ndimage.gaussian_filter(rng.random((h, w)), sigma=max(1.0, min(h, w) / 6))
    field -= field.min()
    return field / max(field.max(), 1e-12)


def _cases(seed: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """60 (name, pred, gt uint8) pairs: varied sizes, degenerate GTs, constant and float predictions."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(60):
        h, w = (int(v) for v in rng.integers(3, 90, size=2))
        gt_field = _blob(rng, h, w)
        gt = np.where(gt_field > rng.uniform(0.3, 0.7), 255, 0).astype(np.uint8)
        # correlated prediction: truth + noise, then squashed into a sub-range (min-max matters)
        pred = np.clip(0.6 * (gt / 255.0) + 0.4 * _blob(rng, h, w) + 0.1 * rng.standard_normal((h, w)), 0, 1)
        pred = rng.uniform(0, 0.2) + pred * rng.uniform(0.5, 0.8)
        kind = i % 10
        if kind == 0:
            gt[:] = 0  # all-black GT
        elif kind == 1:
            gt[:] = 255  # all-white GT
        elif kind == 2:
            pred[:] = rng.uniform(0, 1)  # constant prediction
        elif kind == 3:
            pred = rng.random((h, w))  # white-noise prediction
        elif kind == 4 and i % 20 == 4:
            gt[:] = 0
            pred[:] = 0.0  # constant zero on empty GT
        if kind in (5, 6):  # float predictions (our API takes them as they are)
            cases.append((f"case{i}_float", pred.astype(np.float32 if kind == 5 else np.float64), gt))
        else:
            cases.append((f"case{i}_uint8", np.round(pred * 255).astype(np.uint8), gt))
    return cases


def _reference(pairs: list[tuple[np.ndarray, np.ndarray, bool]]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Run the PySODMetrics classes on (pred, gt, normalize) triples."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Fmeasure is deprecated in favour of FmeasureV2
        fm = py_sod_metrics.Fmeasure()
    em, sm, wfm, mae = (
        py_sod_metrics.Emeasure(),
        py_sod_metrics.Smeasure(),
        py_sod_metrics.WeightedFmeasure(),
        py_sod_metrics.MAE(),
    )
    for pred, gt, normalize in pairs:
        for m in (fm, em, sm, wfm, mae):
            m.step(pred=pred, gt=gt, normalize=normalize)
    f = fm.get_results()["fm"]
    e = em.get_results()["em"]
    scores = {
        "maxF": f["curve"].max(),
        "meanF": f["curve"].mean(),
        "adpF": f["adp"],
        "MAE": mae.get_results()["mae"],
        "Sm": sm.get_results()["sm"],
        "maxEm": e["curve"].max(),
        "meanEm": e["curve"].mean(),
        "adpEm": e["adp"],
        "wFm": wfm.get_results()["wfm"],
    }
    # PySODMetrics stores curves from threshold 255 down to 0; ours go 0..255
    curves = {"f": f["curve"][::-1], "e": e["curve"][::-1]}
    return {k: float(v) for k, v in scores.items()}, curves


def _reference_inputs(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """What PySODMetrics should be fed to mean the same thing as our update(pred, gt)."""
    if pred.dtype == np.uint8:
        return pred, gt, True  # its own im2double + mapminmax
    p = pred.astype(np.float64)
    if p.max() > p.min():
        p = (p - p.min()) / (p.max() - p.min())
    return p, gt > 128, False


CASES = _cases()


def test_cases_cover_the_edge_cases():
    assert len(CASES) >= 50
    assert any(not gt.any() for _, _, gt in CASES)
    assert any(gt.all() for _, _, gt in CASES)
    assert any(p.min() == p.max() for _, p, _ in CASES)
    assert any(p.dtype == np.uint8 for _, p, _ in CASES) and any(p.dtype != np.uint8 for _, p, _ in CASES)
    assert len({gt.shape for _, _, gt in CASES}) > 40


def test_dataset_level_agreement_with_pysodmetrics():
    ours = SaliencyMetrics()
    for name, pred, gt in CASES:
        ours.update(pred, gt, name=name)
    ref, ref_curves = _reference([_reference_inputs(p, g) for _, p, g in CASES])
    got = ours.compute()
    assert ours.count == len(CASES)
    assert set(got) == set(KEYS)
    for k in KEYS:
        assert math.isfinite(ref[k]), k
        assert got[k] == pytest.approx(ref[k], abs=TOL), k
    curves = ours.curves()
    np.testing.assert_allclose(curves["f"], ref_curves["f"], atol=TOL)
    np.testing.assert_allclose(curves["e"], ref_curves["e"], atol=TOL)


def test_per_image_agreement_with_pysodmetrics():
    for name, pred, gt in CASES:
        ours = SaliencyMetrics()
        ours.update(pred, gt)
        ref, _ = _reference([_reference_inputs(pred, gt)])
        got = ours.compute()
        for k in KEYS:
            assert got[k] == pytest.approx(ref[k], abs=TOL), (name, k)


def test_individual_classes_match_the_combined_object():
    combined = SaliencyMetrics()
    singles = [FMeasure(), MAE(), SMeasure(), EMeasure(), WeightedFMeasure()]
    for _, pred, gt in CASES[:20]:
        combined.update(pred, gt)
        for m in singles:
            m.update(pred, gt)
    merged: dict[str, float] = {}
    for m in singles:
        assert isinstance(m, Metric)
        assert m.count == 20
        merged.update(m.compute())
    assert merged == pytest.approx(combined.compute(), abs=1e-12)


def test_normalized_flag_skips_minmax():
    rng = np.random.default_rng(3)
    pred = 0.2 + 0.5 * rng.random((40, 30))  # in [0.2, 0.7]: min-max would change it
    gt = (rng.random((40, 30)) > 0.6).astype(np.uint8) * 255
    ours = SaliencyMetrics(normalized=True)
    ours.update(pred, gt)
    ref, _ = _reference([(pred, gt > 128, False)])
    assert ours.compute() == pytest.approx(ref, abs=TOL)
    # and without the flag, the same map is stretched to [0, 1] first
    stretched = SaliencyMetrics()
    stretched.update(pred, gt)
    assert stretched.compute()["MAE"] != pytest.approx(ours.compute()["MAE"], abs=1e-3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SaliencyMetrics(normalized=True).update(pred + 1, gt)


def test_hand_computed_2x2():
    # pred after min-max: [[1, 128/255], [0, 0]]; GT foreground = top-left pixel only
    pred = np.array([[255, 128], [0, 0]], np.uint8)
    gt = np.array([[255, 0], [0, 0]], np.uint8)
    m = SaliencyMetrics()
    m.update(pred, gt)
    r = m.compute()
    assert r["MAE"] == pytest.approx((128 / 255) / 4, abs=1e-12)
    # thresholds: t=0 -> 4 pixels predicted (P=1/4), t=1..128 -> 2 (P=1/2), t=129..255 -> 1 (P=1); R=1
    f = lambda p: 1.3 * p / (0.3 * p + 1)  # noqa: E731 - F with R = 1, beta^2 = 0.3
    assert r["maxF"] == pytest.approx(1.0, abs=1e-12)
    assert r["meanF"] == pytest.approx((f(0.25) + 128 * f(0.5) + 127 * f(1.0)) / 256, abs=1e-12)
    # adaptive threshold 2 * mean = 0.751 keeps only the top-left pixel: a perfect match
    assert r["adpF"] == pytest.approx(1.0, abs=1e-12)
    # perfect binary alignment: every pixel's enhanced value is 1, sum 4, divided by N - 1 = 3
    assert r["adpEm"] == pytest.approx(4 / 3, abs=1e-12)
    # S-measure: object fg = 1 (single pixel 1.0); object bg over 1 - p = [127/255, 1, 1];
    # region: every quadrant is one pixel with zero variance -> SSIM 1
    bg = np.array([1 - 128 / 255, 1.0, 1.0])
    mu, sd = bg.mean(), bg.std(ddof=1)
    obj = 0.25 * 1.0 + 0.75 * (2 * mu / (mu**2 + 1 + sd))
    assert r["Sm"] == pytest.approx(0.5 * obj + 0.5 * 1.0, abs=1e-12)


def test_perfect_prediction():
    rng = np.random.default_rng(5)
    gt = (ndimage.gaussian_filter(rng.random((50, 60)), 4) > 0.5).astype(np.uint8) * 255
    assert 0 < gt.mean() < 255
    m = SaliencyMetrics()
    m.update(gt.copy(), gt)
    r = m.compute()
    assert r["MAE"] == 0.0
    assert r["maxF"] == pytest.approx(1.0) and r["adpF"] == pytest.approx(1.0)
    assert r["wFm"] == pytest.approx(1.0)
    assert r["Sm"] == pytest.approx(1.0, abs=1e-9)


def test_smeasure_centroid_on_last_column_is_finite():
    """PySODMetrics returns NaN here (empty quadrant × weight 0); we let that quadrant contribute 0."""
    rng = np.random.default_rng(7)
    pred = rng.integers(0, 256, (6, 7)).astype(np.uint8)
    gt = np.zeros((6, 7), np.uint8)
    gt[:, -1] = 255
    ref = py_sod_metrics.Smeasure()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.step(pred, gt)
    assert math.isnan(ref.get_results()["sm"])  # the divergence we document
    ours = SMeasure()
    ours.update(pred, gt)
    # expected: reference object score + area-weighted SSIM of the three non-empty quadrants
    p = pred / 255
    p = (p - p.min()) / (p.max() - p.min())
    g = gt > 128
    rows, cols = np.nonzero(g)
    cy, cx = int(np.round(rows.mean())) + 1, int(np.round(cols.mean())) + 1
    assert cx == 7  # right quadrants are empty
    region = ref.ssim(p[:cy, :cx], g[:cy, :cx]) * (cy * cx / 42) + ref.ssim(p[cy:, :cx], g[cy:, :cx]) * (
        (6 - cy) * cx / 42
    )
    expected = max(0.0, 0.5 * ref.object(p, g) + 0.5 * region)
    assert ours.compute()["Sm"] == pytest.approx(expected, abs=1e-12)


def test_protocol_reset_and_errors():
    m = SaliencyMetrics()
    assert isinstance(m, Metric)
    assert "maxF" in m.definition and "wFm" in m.definition
    with pytest.raises(RuntimeError):
        m.compute()
    with pytest.raises(ValueError, match="img_7"):
        m.update(np.zeros((4, 5), np.uint8), np.zeros((5, 4), np.uint8), name="img_7")
    with pytest.raises(TypeError):
        m.update(np.zeros((4, 5), np.int32), np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        m.update(np.full((4, 5), np.nan), np.zeros((4, 5), np.uint8))
    _, pred, gt = CASES[7]
    m.update(pred, gt)
    first = m.compute()
    m.update(*CASES[8][1:])
    m.reset()
    assert m.count == 0
    m.update(pred, gt)
    assert m.compute() == first
    subset = SaliencyMetrics(include=("F", "MAE"))
    subset.update(pred, gt)
    assert set(subset.compute()) == {"maxF", "meanF", "adpF", "MAE"}
    with pytest.raises(ValueError, match="unknown"):
        SaliencyMetrics(include=("F", "bogus"))


@pytest.mark.parametrize("case", ["empty_gt", "full_gt", "constant_pred", "constant_pred_empty_gt"])
def test_edge_cases_agree_with_pysodmetrics(case):
    """Pins agreement with the run-time reference on the degenerate inputs SOD datasets contain."""
    rng = np.random.default_rng(11)
    pred = rng.integers(0, 256, (17, 23)).astype(np.uint8)
    gt = (rng.random((17, 23)) > 0.6).astype(np.uint8) * 255
    if case in ("empty_gt", "constant_pred_empty_gt"):
        gt[:] = 0
    if case == "full_gt":
        gt[:] = 255
    if case.startswith("constant_pred"):
        pred[:] = 77
    ours = SaliencyMetrics()
    ours.update(pred, gt)
    ref, _ = _reference([(pred, gt, True)])
    got = ours.compute()
    for k in KEYS:
        assert math.isfinite(got[k]), k
        assert got[k] == pytest.approx(ref[k], abs=1e-12), (case, k)


def _split_merge(make, pairs, cuts, order):
    shards = []
    for lo, hi in zip([0, *cuts], [*cuts, len(pairs)]):
        m = make()
        for pred, gt in pairs[lo:hi]:
            m.update(pred, gt)
        shards.append(m)
    import pickle

    shards = [pickle.loads(pickle.dumps(s)) for s in shards]  # states travel between processes
    merged = shards[order[0]]
    for i in order[1:]:
        merged.merge(shards[i])
    return merged


@pytest.mark.parametrize("cls", [SaliencyMetrics, FMeasure, EMeasure, MAE, SMeasure, WeightedFMeasure])
def test_merge_of_shards_equals_one_pass(cls):
    pairs = [(p, g) for _, p, g in CASES[:23]]
    one = cls()
    for pred, gt in pairs:
        one.update(pred, gt)
    merged = _split_merge(cls, pairs, cuts=[1, 9, 10, 17], order=[3, 0, 4, 2, 1])
    assert merged.count == one.count == 23
    want, got = one.compute(), merged.compute()
    assert set(got) == set(want)
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=0, abs=1e-12), k
    if hasattr(one, "curves"):
        for k, curve in one.curves().items():
            np.testing.assert_allclose(merged.curves()[k], curve, rtol=0, atol=1e-12)
    # merging an empty state changes nothing; merging a different metric or configuration fails
    assert merged.merge(cls()).compute() == got
    with pytest.raises(ValueError, match="merge"):
        merged.merge(MAE() if cls is not MAE else SMeasure())
    with pytest.raises(ValueError, match="normalized"):
        merged.merge(cls(normalized=True))
