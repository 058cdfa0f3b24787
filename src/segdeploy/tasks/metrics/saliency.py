"""Salient-object-detection metrics computed by PySODMetrics (``py_sod_metrics``) at run time.

PySODMetrics is the field's reference implementation, validated against D.-P. Fan's MATLAB toolbox.
Every per-image score here is its code (``step`` on a prepared pair); segdeploy adds three things:

* **Input checks and preparation** (:func:`prepare_pair`, MATLAB ``mapminmax(im2double(pred))``): a
  uint8 map is divided by 255, a float map is taken as is, then min-max normalised per image unless
  ``normalized=True`` (a constant map is left unchanged). Ground truth: uint8 ``> 128``, float
  ``> 0.5``, bool as is. Wrong shapes, dtypes and NaN fail with a message naming the image.
* **Mergeable state**: instead of PySODMetrics' per-image lists (256 floats per image per curve) each
  object keeps compensated sums and a count, so memory is constant and per-shard states
  :meth:`merge` into the dataset score (see :mod:`segdeploy.tasks.metrics.accumulate`). The scores
  are the reference's: means over images, curves averaged over images first, then ``max``/``mean``
  over the mean curve (maxF is *not* the mean of per-image maxima).
* **One documented divergence** — S-measure when the foreground centroid falls on the last row or
  column: a quadrant is empty, PySODMetrics takes the mean of an empty slice and returns NaN (times
  weight 0); here that zero-weight quadrant contributes 0, so the score stays finite.

Definitions (PySODMetrics 1.6): thresholds t = 0..255 on ``q = uint8(pred * 255)``, foreground
``q >= t``; F = (1 + β²)PR / (β²P + R), β² = 0.3; adaptive threshold ``min(2·mean(pred), 1)``;
MAE = mean |pred − gt|; S-measure α = 0.5 (Fan et al. ICCV 2017); E-measure (Fan et al. IJCAI 2018);
weighted F (Margolin et al. CVPR 2014), β² = 1, all-background GT → 0. ``eps`` = ``np.spacing(1)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from segdeploy.tasks.metrics.accumulate import CompensatedSum, check_mergeable

#: MATLAB ``eps`` (2.22e-16), the smoothing constant of the reference toolbox.
EPS = float(np.spacing(1))

#: Number of quantised thresholds in the F/E sweeps (t = 0..255).
N_THRESHOLDS = 256

_REFERENCE = "PySODMetrics (py_sod_metrics) at run time, validated against Fan's MATLAB SOD toolbox"


def _sod():
    """The py_sod_metrics module (a hard dependency; imported lazily to keep package import cheap)."""
    import py_sod_metrics

    return py_sod_metrics


def _where(name: str | None) -> str:
    return f" ({name})" if name else ""


def prepare_pair(
    pred: np.ndarray, gt: np.ndarray, *, normalized: bool = False, name: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Convert a saliency map and a GT mask to what PySODMetrics scores with ``normalize=False``.

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
        raise ValueError(f"saliency metrics need 2-D HxW arrays{where}: got pred {pred.shape}, gt {gt.shape}")
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


def _scorer(cls_name: str, **kwargs):
    """A PySODMetrics object used as a per-image scorer: we call ``step`` and pop what it appended."""
    cls = getattr(_sod(), cls_name)
    if cls_name == "Smeasure":
        cls = _finite_smeasure_class()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Fmeasure: "will be removed, use FmeasureV2"
        return cls(**kwargs)


_FINITE_SM = None


def _finite_smeasure_class():
    """PySODMetrics' Smeasure whose SSIM of an empty quadrant is 0 instead of NaN (the divergence)."""
    global _FINITE_SM
    if _FINITE_SM is None:
        base = _sod().Smeasure

        class FiniteSmeasure(base):
            def ssim(self, pred: np.ndarray, gt: np.ndarray) -> float:
                if pred.size == 0:  # zero-area quadrant: its weight is 0, so is its contribution
                    return 0.0
                return super().ssim(pred, gt)

        _FINITE_SM = FiniteSmeasure
    return _FINITE_SM


class _SaliencyBase:
    """Shared update/merge/reset plumbing: prepare the pair once, score with PySODMetrics, sum."""

    definition: dict[str, Any]
    _config: tuple[str, ...] = ("normalized",)

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

    def merge(self, other: "_SaliencyBase") -> "_SaliencyBase":
        """Add another state of the same metric (e.g. a shard's); returns self.

        The merged score equals the score of one pass over both shards' images (see module doc).
        """
        check_mergeable(self, other, *self._config)
        self._merge(other)
        self.count += other.count
        return self

    def _mean(self, total: CompensatedSum) -> Any:
        if self.count == 0:
            raise RuntimeError(f"{type(self).__name__}.compute() called before any update()")
        return total.value / self.count

    def _sums(self) -> list[CompensatedSum]:
        return [v for v in vars(self).values() if isinstance(v, CompensatedSum)]

    def _merge(self, other: "_SaliencyBase") -> None:
        for mine, theirs in zip(self._sums(), other._sums()):
            mine.merge(theirs)

    def __getstate__(self):
        # the PySODMetrics scorers hold nothing between images; rebuild them after unpickling
        return {k: v for k, v in vars(self).items() if not k.startswith("_scorer")}

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        self._make_scorers()

    def _make_scorers(self) -> None:
        pass

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

    _config = ("normalized", "beta2")

    def __init__(self, normalized: bool = False, beta2: float = 0.3) -> None:
        self.beta2 = beta2
        super().__init__(normalized)
        self.definition = {
            **_INPUT_DEF,
            "maxF": f"max over t=0..255 of mean-over-images F(t), F=(1+b2)PR/(b2 P+R), b2={beta2}, fg=uint8(pred*255)>=t",
            "meanF": "mean over t of the same mean-over-images F curve",
            "adpF": "mean over images of F at threshold min(2*mean(pred),1)",
        }

    def _make_scorers(self) -> None:
        self._scorer = _scorer("Fmeasure", beta=self.beta2)

    def _reset(self) -> None:
        self._make_scorers()
        self._f_sum = CompensatedSum(N_THRESHOLDS)
        self._p_sum = CompensatedSum(N_THRESHOLDS)
        self._r_sum = CompensatedSum(N_THRESHOLDS)
        self._adp_sum = CompensatedSum()

    def _accumulate(self, pred: np.ndarray, gt: np.ndarray) -> None:
        s = self._scorer
        s.step(pred, gt, normalize=False)
        # PySODMetrics stores curves from threshold 255 down to 0; ours are indexed by t = 0..255
        self._p_sum.add(s.precisions.pop()[::-1])
        self._r_sum.add(s.recalls.pop()[::-1])
        self._f_sum.add(s.changeable_fms.pop()[::-1])
        self._adp_sum.add(s.adaptive_fms.pop())

    def curves(self) -> dict[str, np.ndarray]:
        """Mean-over-images curves indexed by threshold t = 0..255: ``precision``, ``recall``, ``f``."""
        return {"precision": self._mean(self._p_sum), "recall": self._mean(self._r_sum), "f": self._mean(self._f_sum)}

    def compute(self) -> dict[str, float]:
        f = self._mean(self._f_sum)
        return {"maxF": float(f.max()), "meanF": float(f.mean()), "adpF": float(self._mean(self._adp_sum))}


class _ScalarMeasure(_SaliencyBase):
    """A per-image scalar from one PySODMetrics class, averaged over images."""

    _ref_class = ""
    _ref_list = ""
    _key = ""

    def _make_scorers(self) -> None:
        self._scorer = _scorer(self._ref_class, **self._ref_kwargs())

    def _ref_kwargs(self) -> dict[str, Any]:
        return {}

    def _reset(self) -> None:
        self._make_scorers()
        self._sum = CompensatedSum()

    def _accumulate(self, pred: np.ndarray, gt: np.ndarray) -> None:
        self._scorer.step(pred, gt, normalize=False)
        self._sum.add(float(getattr(self._scorer, self._ref_list).pop()))

    def compute(self) -> dict[str, float]:
        return {self._key: float(self._mean(self._sum))}


class MAE(_ScalarMeasure):
    """Mean absolute error between the [0, 1] map and the binary GT, averaged over images."""

    _ref_class, _ref_list, _key = "MAE", "maes", "MAE"

    def __init__(self, normalized: bool = False) -> None:
        super().__init__(normalized)
        self.definition = {**_INPUT_DEF, "MAE": "mean over images of mean |pred - gt|, pred in [0,1]"}


class SMeasure(_ScalarMeasure):
    """Structure measure (α = 0.5 by default), averaged over images."""

    _ref_class, _ref_list, _key = "Smeasure", "sms", "Sm"
    _config = ("normalized", "alpha")

    def __init__(self, normalized: bool = False, alpha: float = 0.5) -> None:
        self.alpha = alpha
        super().__init__(normalized)
        self.definition = {
            **_INPUT_DEF,
            "Sm": f"mean over images of S-measure, alpha={alpha} (Fan et al. ICCV 2017);"
            " empty quadrant contributes 0 (PySODMetrics gives NaN)",
        }

    def _ref_kwargs(self) -> dict[str, Any]:
        return {"alpha": self.alpha}


class WeightedFMeasure(_ScalarMeasure):
    """Weighted F-measure (β² = 1), averaged over images."""

    _ref_class, _ref_list, _key = "WeightedFmeasure", "weighted_fms", "wFm"
    _config = ("normalized", "beta2")

    def __init__(self, normalized: bool = False, beta2: float = 1.0) -> None:
        self.beta2 = beta2
        super().__init__(normalized)
        self.definition = {
            **_INPUT_DEF,
            "wFm": f"mean over images of weighted F (Margolin et al. CVPR 2014), beta2={beta2}; all-bg GT -> 0",
        }

    def _ref_kwargs(self) -> dict[str, Any]:
        return {"beta": self.beta2}


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

    def _make_scorers(self) -> None:
        self._scorer = _scorer("Emeasure")

    def _reset(self) -> None:
        self._make_scorers()
        self._curve_sum = CompensatedSum(N_THRESHOLDS)
        self._adp_sum = CompensatedSum()

    def _accumulate(self, pred: np.ndarray, gt: np.ndarray) -> None:
        s = self._scorer
        s.step(pred, gt, normalize=False)
        self._curve_sum.add(np.asarray(s.changeable_ems.pop(), dtype=np.float64)[::-1])
        self._adp_sum.add(float(s.adaptive_ems.pop()))

    def curves(self) -> dict[str, np.ndarray]:
        """Mean-over-images E-measure curve indexed by threshold t = 0..255."""
        return {"e": self._mean(self._curve_sum)}

    def compute(self) -> dict[str, float]:
        e = self._mean(self._curve_sum)
        return {"maxEm": float(e.max()), "meanEm": float(e.mean()), "adpEm": float(self._mean(self._adp_sum))}


ALL_SALIENCY = ("F", "MAE", "S", "E", "wF")
_MEMBERS = (("F", FMeasure), ("E", EMeasure), ("MAE", MAE), ("S", SMeasure), ("wF", WeightedFMeasure))


class SaliencyMetrics(_SaliencyBase):
    """All SOD metrics in one pass (the input is prepared once and shared by the members).

    ``compute()`` keys: maxF, meanF, adpF, MAE, Sm, maxEm, meanEm, adpEm, wFm (those selected).

    Args:
        normalized: the maps are already in [0, 1]; skip per-image min-max normalisation.
        include: subset of ``("F", "MAE", "S", "E", "wF")``; S and wF are the slow ones.
    """

    _config = ("normalized", "include")

    def __init__(self, normalized: bool = False, include: Iterable[str] = ALL_SALIENCY) -> None:
        include = tuple(include)
        unknown = set(include) - set(ALL_SALIENCY)
        if unknown:
            raise ValueError(f"unknown saliency metric(s) {sorted(unknown)}; choose from {ALL_SALIENCY}")
        self.include = include
        self._members_list = [cls(normalized) for key, cls in _MEMBERS if key in include]
        super().__init__(normalized)
        definition: dict[str, Any] = {"aggregation": "per-image scores averaged over images; curves averaged first"}
        for m in self._members_list:
            definition.update(m.definition)
        self.definition = definition

    def _reset(self) -> None:
        for m in self._members_list:
            m.reset()

    def _accumulate(self, pred: np.ndarray, gt: np.ndarray) -> None:
        for m in self._members_list:
            m._accumulate(pred, gt)
            m.count += 1

    def _merge(self, other: "SaliencyMetrics") -> None:
        for mine, theirs in zip(self._members_list, other._members_list):
            mine.merge(theirs)

    def curves(self) -> dict[str, np.ndarray]:
        """Mean curves (threshold t = 0..255): precision, recall, f, e (those selected)."""
        out: dict[str, np.ndarray] = {}
        for m in self._members_list:
            if hasattr(m, "curves"):
                out.update(m.curves())
        return out

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise RuntimeError("SaliencyMetrics.compute() called before any update()")
        out: dict[str, float] = {}
        for m in self._members_list:
            out.update(m.compute())
        return out
