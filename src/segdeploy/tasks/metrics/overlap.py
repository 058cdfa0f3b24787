"""Binary-mask overlap metrics: Dice (milesial/Pytorch-UNet) and IoU (4uiiurz1/pytorch-nested-unet).

Conventions (re-implemented from the upstream definitions, no upstream code):

* **Dice** -- Pytorch-UNet ``utils/dice_score.py``/``evaluate.py``:
  ``dice = (2|A∩B| + ε) / (|A| + |B| + ε)``, ε = 1e-6, and two empty masks score exactly 1
  (upstream replaces an empty denominator by the intersection, so ε/ε = 1). Upstream averages per-image
  Dice within a batch, then over batches; we report the **per-image mean** (headline; equals upstream
  for batch size 1) and the **pooled** Dice ``(2ΣI + ε) / (Σ|A| + Σ|B| + ε)`` over the dataset.
* **IoU** -- pytorch-nested-unet ``metrics.iou_score``: ``(|A∩B| + ε) / (|A∪B| + ε)``, ε = 1e-5, with
  ``A = sigmoid(logit) > 0.5`` and ``B = target > 0.5``. Upstream scores each validation *batch* pooled
  and averages batches weighted by batch size; we report the **per-image mean** (headline; equals
  upstream for batch size 1) and the **pooled** IoU over the dataset.

Inputs: ``pred`` is a mask (bool or integer, non-zero = foreground), probabilities (float,
foreground = ``p > threshold``, default 0.5) or, with ``logits=True``, raw logits (foreground =
``sigmoid(x) > threshold``, the 4uiiurz1 rule). ``target`` is bool or numeric with foreground
``> 0.5`` (so 0/1 and 0/255 masks both work). Arrays are HxW (one image) or NxHxW (N images).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from segdeploy.tasks.metrics.accumulate import CompensatedSum, check_mergeable

DICE_EPS = 1e-6  # milesial/Pytorch-UNet dice_coeff epsilon
IOU_SMOOTH = 1e-5  # 4uiiurz1/pytorch-nested-unet iou_score smooth


def binarize_pred(
    pred: np.ndarray, *, threshold: float = 0.5, logits: bool = False, name: str | None = None
) -> np.ndarray:
    """Foreground mask of a prediction (see the module docstring for the rule per dtype)."""
    pred = np.asarray(pred)
    if pred.dtype == np.bool_:
        return pred
    if np.issubdtype(pred.dtype, np.integer):
        if logits:
            raise TypeError(f"logits=True needs a float prediction{_where(name)}; got {pred.dtype}")
        return pred != 0
    if np.issubdtype(pred.dtype, np.floating):
        if logits:
            # same order as upstream: sigmoid in the prediction's precision, then compare
            with np.errstate(over="ignore"):
                prob = 1 / (1 + np.exp(-pred))
            return prob > threshold
        return pred > threshold
    raise TypeError(f"prediction must be bool, integer or float{_where(name)}; got {pred.dtype}")


def binarize_target(target: np.ndarray, *, name: str | None = None) -> np.ndarray:
    """Foreground mask of a ground truth: bool as is, numeric ``> 0.5``."""
    target = np.asarray(target)
    if target.dtype == np.bool_:
        return target
    if np.issubdtype(target.dtype, np.number):
        return target > 0.5
    raise TypeError(f"target must be bool or numeric{_where(name)}; got {target.dtype}")


def _where(name: str | None) -> str:
    return f" ({name})" if name else ""


def _as_batch(pred: np.ndarray, target: np.ndarray, name: str | None) -> tuple[np.ndarray, np.ndarray]:
    if pred.shape != target.shape:
        raise ValueError(
            f"prediction and target differ in shape{_where(name)}: {pred.shape} vs {target.shape};"
            " resize the prediction to the mask's resolution first"
        )
    if pred.ndim == 2:
        return pred[None], target[None]
    if pred.ndim == 3:
        return pred, target
    raise ValueError(f"expected HxW or NxHxW masks{_where(name)}; got shape {pred.shape}")


class BinaryOverlap:
    """Dice and IoU together, per-image mean and pooled (both binarise the inputs once).

    ``compute()`` keys: ``dice`` (= ``dice_per_image``, headline), ``dice_per_image``, ``dice_pooled``,
    ``iou`` (= ``iou_per_image``, headline), ``iou_per_image``, ``iou_pooled``.

    Args:
        threshold: probability threshold for float predictions (strict ``>``).
        logits: float predictions are logits; foreground is ``sigmoid(x) > threshold``.
        dice_eps: Dice smoothing ε (milesial: 1e-6).
        iou_smooth: IoU smoothing ε (4uiiurz1: 1e-5).
    """

    _which = ("dice", "iou")

    def __init__(
        self,
        threshold: float = 0.5,
        logits: bool = False,
        dice_eps: float = DICE_EPS,
        iou_smooth: float = IOU_SMOOTH,
    ) -> None:
        self.threshold = threshold
        self.logits = logits
        self.dice_eps = dice_eps
        self.iou_smooth = iou_smooth
        rule = f"sigmoid(logit) > {threshold}" if logits else f"float p > {threshold}; bool/int != 0"
        self.definition: dict[str, Any] = {
            "pred_foreground": rule,
            "target_foreground": "> 0.5 (bool as is)",
            "resolution": "prediction and mask compared at the mask's resolution",
        }
        if "dice" in self._which:
            self.definition["dice"] = (
                f"per-image (2|A&B|+{dice_eps})/(|A|+|B|+{dice_eps}), both empty -> 1, mean over images"
                " (milesial/Pytorch-UNet); headline"
            )
            self.definition["dice_pooled"] = "same formula on counts summed over the dataset"
        if "iou" in self._which:
            self.definition["iou"] = (
                f"per-image (|A&B|+{iou_smooth})/(|A or B|+{iou_smooth}), mean over images"
                " (4uiiurz1/pytorch-nested-unet metrics.iou_score); headline"
            )
            self.definition["iou_pooled"] = "same formula on counts summed over the dataset"
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self._dice_sum = CompensatedSum()
        self._iou_sum = CompensatedSum()
        self._inter = 0
        self._pred = 0
        self._target = 0
        self._union = 0

    def update(self, pred: np.ndarray, target: np.ndarray, *, name: str | None = None) -> None:
        """Score one HxW image or a batch of NxHxW images."""
        a = binarize_pred(pred, threshold=self.threshold, logits=self.logits, name=name)
        b = binarize_target(target, name=name)
        a, b = _as_batch(a, b, name)
        n = a.shape[0]
        flat_a = a.reshape(n, -1)
        flat_b = b.reshape(n, -1)
        inter = np.count_nonzero(flat_a & flat_b, axis=1)
        n_a = np.count_nonzero(flat_a, axis=1)
        n_b = np.count_nonzero(flat_b, axis=1)
        union = n_a + n_b - inter
        for value in dice_from_counts(inter, n_a + n_b, self.dice_eps):
            self._dice_sum.add(value)
        for value in iou_from_counts(inter, union, self.iou_smooth):
            self._iou_sum.add(value)
        self._inter += int(inter.sum())
        self._pred += int(n_a.sum())
        self._target += int(n_b.sum())
        self._union += int(union.sum())
        self.count += n

    def merge(self, other: "BinaryOverlap") -> "BinaryOverlap":
        """Add another state of the same metric (e.g. a shard's); returns self.

        Pooled scores merge exactly (integer counts); per-image means are compensated sums over the
        same per-image values, so the merged score equals one pass over both shards.
        """
        check_mergeable(self, other, "threshold", "logits", "dice_eps", "iou_smooth")
        self._dice_sum.merge(other._dice_sum)
        self._iou_sum.merge(other._iou_sum)
        self._inter += other._inter
        self._pred += other._pred
        self._target += other._target
        self._union += other._union
        self.count += other.count
        return self

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise RuntimeError(f"{type(self).__name__}.compute() called before any update()")
        out: dict[str, float] = {}
        if "dice" in self._which:
            per_image = self._dice_sum.value / self.count
            out["dice"] = per_image
            out["dice_per_image"] = per_image
            out["dice_pooled"] = float(dice_from_counts(self._inter, self._pred + self._target, self.dice_eps))
        if "iou" in self._which:
            per_image = self._iou_sum.value / self.count
            out["iou"] = per_image
            out["iou_per_image"] = per_image
            out["iou_pooled"] = float(iou_from_counts(self._inter, self._union, self.iou_smooth))
        return out


class Dice(BinaryOverlap):
    """Dice only (milesial convention): keys ``dice``, ``dice_per_image``, ``dice_pooled``."""

    _which = ("dice",)


class IoU(BinaryOverlap):
    """IoU only (4uiiurz1 convention): keys ``iou``, ``iou_per_image``, ``iou_pooled``."""

    _which = ("iou",)


def dice_from_counts(inter: Any, sets_sum: Any, eps: float = DICE_EPS) -> np.ndarray:
    """``(2·inter + eps) / (sets_sum + eps)``; exactly 1 where ``sets_sum == 0`` (two empty masks)."""
    inter = np.asarray(inter, dtype=np.float64)
    sets_sum = np.asarray(sets_sum, dtype=np.float64)
    empty = sets_sum == 0
    return np.where(empty, 1.0, (2 * inter + eps) / np.where(empty, 1.0, sets_sum + eps))


def iou_from_counts(inter: Any, union: Any, smooth: float = IOU_SMOOTH) -> np.ndarray:
    """``(inter + smooth) / (union + smooth)``; exactly 1 where ``union == 0`` (two empty masks)."""
    inter = np.asarray(inter, dtype=np.float64)
    union = np.asarray(union, dtype=np.float64)
    empty = union == 0
    return np.where(empty, 1.0, (inter + smooth) / np.where(empty, 1.0, union + smooth))
