"""Salient-object-detection metrics, following PySODMetrics 1.6 (``py_sod_metrics``) conventions.

PySODMetrics was validated against D.-P. Fan's MATLAB evaluation toolbox; every definition below is
written to give the same numbers (agreement tested to 1e-6 in ``tests/test_metrics_saliency.py``).
The code is our own; the conventions are theirs:

* **Input preparation** (MATLAB ``mapminmax(im2double(pred))``): a uint8 map is divided by 255, a
  float map is taken as is; then, unless ``normalized=True``, the map is min-max normalised per image
  (a constant map is left unchanged). Ground truth: uint8 ``> 128``, float ``> 0.5``, bool as is.
* **Threshold sweep** (F and E curves): the normalised map is quantised by truncation,
  ``q = uint8(pred * 255)``, and the foreground at threshold ``t`` is ``q >= t`` for t = 0..255.
  Curves are averaged over images first; ``max``/``mean`` are then taken over the mean curve (so maxF is
  *not* the mean of per-image maxima).
* **Adaptive threshold**: ``min(2 * mean(pred), 1)`` on the unquantised map, foreground ``pred >= thr``.
* **F-measure**: F = (1 + β²)·P·R / (β²·P + R), β² = 0.3; P = 0 when nothing is predicted,
  R uses max(|GT|, 1); F = 0 where P·R = 0. Adaptive F is 0 when the intersection is empty.
* **MAE**: mean |pred − gt| per image, then mean over images.
* **S-measure** (Fan et al., ICCV 2017), α = 0.5: all-background GT → 1 − mean(pred); all-foreground GT →
  mean(pred); otherwise max(0, α·S_object + (1 − α)·S_region). S_region splits at the rounded foreground
  centroid (+1, MATLAB 1-based) into four quadrants weighted by area, each scored by the SSIM variant with
  (N − 1 + eps) denominators. *Divergence*: when the centroid falls on the last row/column a quadrant is
  empty; PySODMetrics then returns NaN (mean of an empty slice times weight 0), we let that zero-weight
  quadrant contribute 0.
* **E-measure** (Fan et al., IJCAI 2018): enhanced alignment of the binarised map, computed from the four
  TP/FP/FN/TN counts; sum / (N − 1 + eps). Curve over the 256 thresholds → maxEm, meanEm; adaptive
  threshold → adpEm.
* **Weighted F-measure** (Margolin et al., CVPR 2014), β² = 1: error dependency through the nearest
  foreground pixel (Euclidean distance transform) and a 7×7, σ = 5 Gaussian (MATLAB ``fspecial``),
  importance 2 − exp(ln(0.5)/5 · distance) on the background. All-background GT scores 0.

``eps`` is MATLAB's ``eps`` = ``np.spacing(1)`` throughout.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

#: MATLAB ``eps`` (2.22e-16), the smoothing constant of the reference toolbox.
EPS = float(np.spacing(1))

#: Number of quantised thresholds in the F/E sweeps (t = 0..255).
N_THRESHOLDS = 256

_REFERENCE = "PySODMetrics 1.6 (py_sod_metrics), validated against Fan's MATLAB SOD toolbox"


# --------------------------------------------------------------------------------------------------
# Input preparation
# --------------------------------------------------------------------------------------------------
def _where(name: str | None) -> str:
    return f" ({name})" if name else ""


def prepare_pair(
    pred: np.ndarray, gt: np.ndarray, *, normalized: bool = False, name: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Convert a saliency map and a GT mask to the form every metric here scores.

    Args:
        pred: HxW saliency map, uint8 0..255, bool, or float (in [0, 1] when ``normalized``).
        gt: HxW ground truth: bool, uint8 (foreground ``> 128``) or float (foreground ``> 0.5``).
        normalized: skip the per-image min-max normalisation (the map is already in [0, 1]).
        name: image name, used only in error messages.

    Returns:
        ``(pred, gt)``: float64 map in [0, 1] and a bool mask of the same HxW shape.

    Raises:
        ValueError: shape mismatch, not 2-D, empty, non-finite values, or out-of-range normalised map.
        TypeError: unsupported dtype.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    where = _where(name)
    if pred.ndim != 2 or gt.ndim != 2:
        raise ValueError(
            f"saliency metrics need 2-D HxW arrays{where}: got pred {pred.shape}, gt {gt.shape}"
        )
    if pred.shape != gt.shape:
        raise ValueError(
            f"prediction and ground truth differ in size{where}: pred {pred.shape} vs gt {gt.shape};"
            " resize the prediction to the ground-truth size first"
        )
    if pred.size == 0:
        raise ValueError(f"empty image{where}")

    if gt.dtype == np.bool_:
        gt_b = gt
    elif gt.dtype == np.uint8:
        gt_b = gt > 128
    elif np.issubdtype(gt.dtype, np.floating):
        gt_b = gt > 0.5
    else:
        raise TypeError(f"ground truth must be bool, uint8 (>128 = foreground) or float{where}; got {gt.dtype}")

    if pred.dtype == np.uint8:
        p = pred / 255  # im2double
    elif pred.dtype == np.bool_:
        p = pred.astype(np.float64)
    elif np.issubdtype(pred.dtype, np.floating):
        p = pred.astype(np.float64)
        if not np.all(np.isfinite(p)):
            raise ValueError(f"prediction contains NaN or inf{where}")
    else:
        raise TypeError(f"prediction must be uint8 0..255, bool or float{where}; got {pred.dtype}")

    if normalized:
        if p.min() < 0 or p.max() > 1:
            raise ValueError(
                f"normalized=True but the prediction spans [{p.min():.6g}, {p.max():.6g}], not [0, 1]{where}"
            )
    else:
        lo, hi = p.min(), p.max()
        if hi != lo:  # mapminmax; a constant map stays as it is
            p = (p - lo) / (hi - lo)
        elif lo < 0 or lo > 1:
            raise ValueError(f"constant prediction {lo:.6g} lies outside [0, 1]{where}")
    return p, gt_b


# --------------------------------------------------------------------------------------------------
# Per-image scores (pure functions on a prepared pair)
# --------------------------------------------------------------------------------------------------
def threshold_counts(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of predicted-foreground pixels for every threshold t = 0..255 (index = t).

    Args:
        pred: prepared float64 map in [0, 1].
        gt: bool mask.

    Returns:
        ``(tp, pp)``: int64 arrays of length 256, ``tp[t]`` = #(q >= t and gt), ``pp[t]`` = #(q >= t),
        with ``q = uint8(pred * 255)`` (truncation, as the reference).
    """
    q = (pred * 255).astype(np.uint8)
    hist_fg = np.bincount(q[gt], minlength=N_THRESHOLDS)
    hist_all = np.bincount(q.ravel(), minlength=N_THRESHOLDS)
    # reverse cumulative sum: number of pixels with value >= t
    tp = np.cumsum(hist_fg[::-1])[::-1]
    pp = np.cumsum(hist_all[::-1])[::-1]
    return tp.astype(np.int64), pp.astype(np.int64)


def _f_from_pr(precision: np.ndarray, recall: np.ndarray, beta2: float) -> np.ndarray:
    num = (1 + beta2) * precision * recall
    den = np.where(num == 0, 1, beta2 * precision + recall)
    return num / den


def pr_curves(tp: np.ndarray, pp: np.ndarray, n_fg: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall per threshold from :func:`threshold_counts` output.

    Precision is 0 where nothing is predicted; recall divides by max(n_fg, 1).
    """
    precision = tp / np.maximum(pp, 1)
    recall = tp / max(n_fg, 1)
    return precision, recall


def adaptive_threshold(pred: np.ndarray) -> float:
    """The SOD adaptive threshold ``min(2 * mean(pred), 1)``."""
    return min(2 * float(pred.mean()), 1.0)


def adaptive_f(pred: np.ndarray, gt: np.ndarray, beta2: float = 0.3) -> float:
    """F-measure of ``pred >= adaptive_threshold(pred)``; 0 when it misses the GT entirely."""
    binary = pred >= adaptive_threshold(pred)
    inter = np.count_nonzero(binary & gt)
    if inter == 0:
        return 0.0
    p = inter / np.count_nonzero(binary)
    r = inter / np.count_nonzero(gt)
    return float((1 + beta2) * p * r / (beta2 * p + r))


def e_measure_from_counts(tp: Any, pp: Any, n_fg: int, n: int) -> np.ndarray:
    """Enhanced-alignment measure from counts (vectorised over thresholds).

    Args:
        tp: predicted-foreground ∩ GT-foreground count(s).
        pp: predicted-foreground count(s).
        n_fg: GT foreground pixels.
        n: total pixels.

    Returns:
        E-measure value(s), ``Σ_parts enhanced(part)·|part| / (n − 1 + eps)``.
    """
    tp = np.asarray(tp, dtype=np.float64)
    pp = np.asarray(pp, dtype=np.float64)
    pn = n - pp  # predicted background
    if n_fg == 0:
        total = pn
    elif n_fg == n:
        total = pp
    else:
        fp = pp - tp
        fn = n_fg - tp
        tn = pn - fn
        mp = pp / n  # mean of the binarised prediction
        mg = n_fg / n
        # demeaned values of (pred, gt) for the four parts: fg-fg, fg-bg, bg-fg, bg-bg
        parts = (
            (tp, 1 - mp, 1 - mg),
            (fp, 1 - mp, -mg),
            (fn, -mp, 1 - mg),
            (tn, -mp, -mg),
        )
        total = np.zeros_like(tp)
        for count, a, b in parts:
            align = 2 * (a * b) / (a**2 + b**2 + EPS)
            total = total + (align + 1) ** 2 / 4 * count
    return total / (n - 1 + EPS)


def _s_object_part(x: np.ndarray) -> float:
    mean = float(np.mean(x))
    std = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    return 2 * mean / (mean**2 + 1 + std + EPS)


def _ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    n = pred.size
    x = np.mean(pred)
    y = np.mean(gt)
    sx = np.sum((pred - x) ** 2) / (n - 1 + EPS)
    sy = np.sum((gt - y) ** 2) / (n - 1 + EPS)
    sxy = np.sum((pred - x) * (gt - y)) / (n - 1 + EPS)
    a = 4 * x * y * sxy
    b = (x**2 + y**2) * (sx + sy)
    if a != 0:
        return float(a / (b + EPS))
    return 1.0 if b == 0 else 0.0


def s_measure(pred: np.ndarray, gt: np.ndarray, alpha: float = 0.5) -> float:
    """Structure measure of one prepared pair (see the module docstring)."""
    y = float(np.mean(gt))
    if y == 0:
        return float(1 - np.mean(pred))
    if y == 1:
        return float(np.mean(pred))
    obj = _s_object_part(pred[gt]) * y + _s_object_part((1 - pred)[~gt]) * (1 - y)

    h, w = gt.shape
    area = h * w
    rows, cols = np.nonzero(gt)
    # MATLAB centroid is 1-based; slicing [0:c] then includes it, hence + 1
    cy = int(np.round(rows.mean())) + 1
    cx = int(np.round(cols.mean())) + 1
    w_lt = cx * cy / area
    w_rt = cy * (w - cx) / area
    w_lb = (h - cy) * cx / area
    w_rb = 1 - w_lt - w_rt - w_lb
    region = 0.0
    for (r0, r1, c0, c1), weight in (
        ((0, cy, 0, cx), w_lt),
        ((0, cy, cx, w), w_rt),
        ((cy, h, 0, cx), w_lb),
        ((cy, h, cx, w), w_rb),
    ):
        if r1 > r0 and c1 > c0:  # empty quadrant (centroid on the border) has zero weight
            region += _ssim(pred[r0:r1, c0:c1], gt[r0:r1, c0:c1]) * weight
    return float(max(0.0, alpha * obj + (1 - alpha) * region))


def _matlab_gaussian(size: int = 7, sigma: float = 5.0) -> np.ndarray:
    """MATLAB ``fspecial('gaussian', size, sigma)``."""
    r = (size - 1) / 2
    y, x = np.ogrid[-r : r + 1, -r : r + 1]
    k = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    k[k < np.finfo(k.dtype).eps * k.max()] = 0
    return k / k.sum()


_GAUSS_7_5 = _matlab_gaussian(7, 5.0)


def weighted_f(pred: np.ndarray, gt: np.ndarray, beta2: float = 1.0) -> float:
    """Weighted F-measure of one prepared pair (Margolin et al. 2014); 0 for an all-background GT."""
    from scipy.ndimage import convolve, distance_transform_edt

    if not gt.any():
        return 0.0
    # distance from each background pixel to its nearest foreground pixel, and that pixel's index
    dist, (ir, ic) = distance_transform_edt(~gt, return_indices=True)
    err = np.abs(pred - gt)
    err_dep = err.copy()
    bg = ~gt
    err_dep[bg] = err[ir[bg], ic[bg]]
    err_blur = convolve(err_dep, weights=_GAUSS_7_5, mode="constant", cval=0)
    min_err = np.where(gt & (err_blur < err), err_blur, err)
    importance = np.where(bg, 2 - np.exp(np.log(0.5) / 5 * dist), 1.0)
    err_w = min_err * importance
    tp_w = np.sum(gt) - np.sum(err_w[gt])
    fp_w = np.sum(err_w[bg])
    recall = 1 - np.mean(err_w[gt])
    precision = tp_w / (tp_w + fp_w + EPS)
    return float((1 + beta2) * recall * precision / (recall + beta2 * precision + EPS))


# --------------------------------------------------------------------------------------------------
# Metric objects
# --------------------------------------------------------------------------------------------------
class _SaliencyBase:
    """Shared update/reset plumbing: prepare the pair once, then accumulate."""

    definition: dict[str, Any]

    def __init__(self, normalized: bool = False) -> None:
        self.normalized = normalized
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self._reset()

    def update(self, pred: np.ndarray, target: np.ndarray, *, name: str | None = None) -> None:
        """Score one image: ``pred`` HxW saliency map at the GT size, ``target`` HxW GT mask."""
        p, g = prepare_pair(pred, target, normalized=self.normalized, name=name)
        self._accumulate(p, g)
        self.count += 1

    def _mean(self, total: Any) -> Any:
        if self.count == 0:
            raise RuntimeError(f"{type(self).__name__}.compute() called before any update()")
        return total / self.count

    # subclasses implement these
    def _reset(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _accumulate(self, pred: np.ndarray, gt: np.ndarray) -> None:  # pragma: no cover
        raise NotImplementedError


_INPUT_DEF = {
    "pred": "saliency map at GT size; uint8/255 or float; per-image min-max unless normalized",
    "gt": "uint8 > 128, float > 0.5, or bool",
    "reference": _REFERENCE,
}


class FMeasure(_SaliencyBase):
    """maxF / meanF (over the mean-over-images F curve) and adpF, β² = 0.3."""

    def __init__(self, normalized: bool = False, beta2: float = 0.3) -> None:
        self.beta2 = beta2
        super().__init__(normalized)
        self.definition = {
            **_INPUT_DEF,
            "maxF": f"max over t=0..255 of mean-over-images F(t), F=(1+b2)PR/(b2 P+R), b2={beta2}, fg=uint8(pred*255)>=t",
            "meanF": "mean over t of the same mean-over-images F curve",
            "adpF": "mean over images of F at threshold min(2*mean(pred),1)",
        }

    def _reset(self) -> None:
        self._f_sum = np.zeros(N_THRESHOLDS)
        self._p_sum = np.zeros(N_THRESHOLDS)
        self._r_sum = np.zeros(N_THRESHOLDS)
        self._adp_sum = 0.0

    def _accumulate(self, pred: np.ndarray, gt: np.ndarray) -> None:
        tp, pp = threshold_counts(pred, gt)
        self._accumulate_counts(pred, gt, tp, pp)

    def _accumulate_counts(self, pred: np.ndarray, gt: np.ndarray, tp: np.ndarray, pp: np.ndarray) -> None:
        precision, recall = pr_curves(tp, pp, int(np.count_nonzero(gt)))
        self._p_sum += precision
        self._r_sum += recall
        self._f_sum += _f_from_pr(precision, recall, self.beta2)
        self._adp_sum += adaptive_f(pred, gt, self.beta2)

    def curves(self) -> dict[str, np.ndarray]:
        """Mean-over-images curves indexed by threshold t = 0..255: ``precision``, ``recall``, ``f``."""
        return {
            "precision": self._mean(self._p_sum),
            "recall": self._mean(self._r_sum),
            "f": self._mean(self._f_sum),
        }

    def compute(self) -> dict[str, float]:
        f = self._mean(self._f_sum)
        return {"maxF": float(f.max()), "meanF": float(f.mean()), "adpF": float(self._mean(self._adp_sum))}


class MAE(_SaliencyBase):
    """Mean absolute error between the [0, 1] map and the binary GT, averaged over images."""

    def __init__(self, normalized: bool = False) -> None:
        super().__init__(normalized)
        self.definition = {**_INPUT_DEF, "MAE": "mean over images of mean |pred - gt|, pred in [0,1]"}

    def _reset(self) -> None:
        self._sum = 0.0

    def _accumulate(self, pred: np.ndarray, gt: np.ndarray) -> None:
        self._sum += float(np.mean(np.abs(pred - gt)))

    def compute(self) -> dict[str, float]:
        return {"MAE": float(self._mean(self._sum))}


class SMeasure(_SaliencyBase):
    """Structure measure (α = 0.5 by default), averaged over images."""

    def __init__(self, normalized: bool = False, alpha: float = 0.5) -> None:
        self.alpha = alpha
        super().__init__(normalized)
        self.definition = {
            **_INPUT_DEF,
            "Sm": f"mean over images of S-measure, alpha={alpha} (Fan et al. ICCV 2017);"
            " empty quadrant contributes 0 (PySODMetrics gives NaN)",
        }

    def _reset(self) -> None:
        self._sum = 0.0

    def _accumulate(self, pred: np.ndarray, gt: np.ndarray) -> None:
        self._sum += s_measure(pred, gt, self.alpha)

    def compute(self) -> dict[str, float]:
        return {"Sm": float(self._mean(self._sum))}


class EMeasure(_SaliencyBase):
    """Enhanced-alignment measure: maxEm / meanEm over the mean curve, adpEm."""

    def __init__(self, normalized: bool = False) -> None:
        super().__init__(normalized)
        self.definition = {
            **_INPUT_DEF,
            "maxEm": "max over t=0..255 of the mean-over-images E-measure curve (Fan et al. IJCAI 2018)",
            "meanEm": "mean over t of that curve",
            "adpEm": "mean over images of E-measure at threshold min(2*mean(pred),1)",
        }

    def _reset(self) -> None:
        self._curve_sum = np.zeros(N_THRESHOLDS)
        self._adp_sum = 0.0

    def _accumulate(self, pred: np.ndarray, gt: np.ndarray) -> None:
        tp, pp = threshold_counts(pred, gt)
        self._accumulate_counts(pred, gt, tp, pp)

    def _accumulate_counts(self, pred: np.ndarray, gt: np.ndarray, tp: np.ndarray, pp: np.ndarray) -> None:
        n_fg = int(np.count_nonzero(gt))
        self._curve_sum += e_measure_from_counts(tp, pp, n_fg, gt.size)
        binary = pred >= adaptive_threshold(pred)
        self._adp_sum += float(
            e_measure_from_counts(np.count_nonzero(binary & gt), np.count_nonzero(binary), n_fg, gt.size)
        )

    def curves(self) -> dict[str, np.ndarray]:
        """Mean-over-images E-measure curve indexed by threshold t = 0..255."""
        return {"e": self._mean(self._curve_sum)}

    def compute(self) -> dict[str, float]:
        e = self._mean(self._curve_sum)
        return {"maxEm": float(e.max()), "meanEm": float(e.mean()), "adpEm": float(self._mean(self._adp_sum))}


class WeightedFMeasure(_SaliencyBase):
    """Weighted F-measure (β² = 1), averaged over images."""

    def __init__(self, normalized: bool = False, beta2: float = 1.0) -> None:
        self.beta2 = beta2
        super().__init__(normalized)
        self.definition = {
            **_INPUT_DEF,
            "wFm": f"mean over images of weighted F (Margolin et al. CVPR 2014), beta2={beta2}; all-bg GT -> 0",
        }

    def _reset(self) -> None:
        self._sum = 0.0

    def _accumulate(self, pred: np.ndarray, gt: np.ndarray) -> None:
        self._sum += weighted_f(pred, gt, self.beta2)

    def compute(self) -> dict[str, float]:
        return {"wFm": float(self._mean(self._sum))}


ALL_SALIENCY = ("F", "MAE", "S", "E", "wF")


class SaliencyMetrics(_SaliencyBase):
    """All SOD metrics in one pass (input prepared once, threshold histogram shared by F and E).

    ``compute()`` keys: maxF, meanF, adpF, MAE, Sm, maxEm, meanEm, adpEm, wFm (those selected).

    Args:
        normalized: the maps are already in [0, 1]; skip per-image min-max normalisation.
        include: subset of ``("F", "MAE", "S", "E", "wF")``; S and wF are the slow ones.
    """

    def __init__(self, normalized: bool = False, include: Iterable[str] = ALL_SALIENCY) -> None:
        include = tuple(include)
        unknown = set(include) - set(ALL_SALIENCY)
        if unknown:
            raise ValueError(f"unknown saliency metric(s) {sorted(unknown)}; choose from {ALL_SALIENCY}")
        self.include = include
        self._f = FMeasure(normalized) if "F" in include else None
        self._e = EMeasure(normalized) if "E" in include else None
        self._others = [
            cls(normalized) for key, cls in (("MAE", MAE), ("S", SMeasure), ("wF", WeightedFMeasure)) if key in include
        ]
        super().__init__(normalized)
        definition: dict[str, Any] = {"aggregation": "per-image scores averaged over images; curves averaged first"}
        for m in self._members():
            definition.update(m.definition)
        self.definition = definition

    def _members(self) -> list[_SaliencyBase]:
        return [m for m in (self._f, self._e) if m is not None] + self._others

    def _reset(self) -> None:
        for m in self._members():
            m.reset()

    def _accumulate(self, pred: np.ndarray, gt: np.ndarray) -> None:
        if self._f is not None or self._e is not None:
            tp, pp = threshold_counts(pred, gt)
            for m in (self._f, self._e):
                if m is not None:
                    m._accumulate_counts(pred, gt, tp, pp)
                    m.count += 1
        for m in self._others:
            m._accumulate(pred, gt)
            m.count += 1

    def curves(self) -> dict[str, np.ndarray]:
        """Mean curves (threshold t = 0..255): precision, recall, f, e (those selected)."""
        out: dict[str, np.ndarray] = {}
        for m in (self._f, self._e):
            if m is not None:
                out.update(m.curves())
        return out

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise RuntimeError("SaliencyMetrics.compute() called before any update()")
        out: dict[str, float] = {}
        for m in self._members():
            out.update(m.compute())
        return out
