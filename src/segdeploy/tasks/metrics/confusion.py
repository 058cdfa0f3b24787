"""Confusion-matrix metrics for semantic segmentation (1-stage-wseg ``eval_seg.py`` conventions).

* One C×C matrix (rows = ground truth, columns = prediction) accumulated over the whole split;
  pixels whose ground truth is the ignore label (255 in VOC) are skipped.
* ``IoU_c = TP / (TP + FP + FN)``. A class that appears in neither ground truth nor prediction scores 0
  (upstream divides by ``eps + TP + FP + FN`` with eps = 1e-20) and still counts in the mean.
* **mIoU** = mean over all C classes, background included -- the headline (upstream's "With background",
  the number the README and seed guide 004 report for VOC: 59.7 / 62.7 with CRF);
  **mIoU_fg** = mean over classes 1..C−1 (upstream's first "mIoU" line);
  **mIoU_present** = mean over classes with TP + FP + FN > 0 (torchmetrics' ``average="macro"``);
  **pixel_accuracy** = trace / total.

Unlike upstream (which silently drops any ground truth ≥ C), a ground-truth value that is neither a
class id nor the ignore label is an error, and so is a predicted value outside 0..C−1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: PASCAL VOC 2012 class names, index = class id.
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


class ConfusionMatrix:
    """Accumulates a C×C confusion matrix with ``np.bincount`` and reports IoU-based scores.

    ``compute()`` keys: ``mIoU`` (all classes, headline), ``mIoU_fg`` (classes 1..C−1),
    ``mIoU_present``, ``pixel_accuracy``, and ``IoU/<class name>`` for each class.

    Args:
        num_classes: C (21 for VOC: background + 20).
        ignore_index: ground-truth label to skip (255 for VOC), or None.
        class_names: C names used in the per-class keys (default: VOC names when C == 21, else ids).
    """

    def __init__(
        self, num_classes: int = 21, ignore_index: int | None = 255, class_names: Sequence[str] | None = None
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} collides with a class id (0..{num_classes - 1})")
        if class_names is None:
            class_names = VOC_CLASSES if num_classes == len(VOC_CLASSES) else [str(i) for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names given for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = tuple(class_names)
        self.definition: dict[str, Any] = {
            "matrix": f"{num_classes}x{num_classes} pixel counts (rows gt, cols pred) summed over the split;"
            f" gt == {ignore_index} ignored",
            "IoU_c": "TP/(TP+FP+FN); class absent from gt and pred -> 0 (kept in the mean, as upstream)",
            "mIoU": f"mean IoU over all {num_classes} classes incl. background (headline, wseg README)",
            "mIoU_fg": f"mean IoU over classes 1..{num_classes - 1}",
            "mIoU_present": "mean IoU over classes with TP+FP+FN > 0 (torchmetrics macro)",
            "pixel_accuracy": "trace / total of the matrix",
        }
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray, *, name: str | None = None) -> None:
        """Add one HxW label map (or an NxHxW batch) and its ground truth of the same shape."""
        pred = np.asarray(pred)
        target = np.asarray(target)
        where = f" ({name})" if name else ""
        if pred.shape != target.shape:
            raise ValueError(f"prediction and ground truth differ in shape{where}: {pred.shape} vs {target.shape}")
        if pred.ndim not in (2, 3):
            raise ValueError(f"expected HxW or NxHxW label maps{where}; got shape {pred.shape}")
        for arr, what in ((pred, "prediction"), (target, "ground truth")):
            if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
                raise TypeError(f"{what} must hold integer class ids{where}; got {arr.dtype}")
        t = target.ravel().astype(np.int64)
        p = pred.ravel().astype(np.int64)
        if self.ignore_index is not None:
            keep = t != self.ignore_index
            t, p = t[keep], p[keep]
        c = self.num_classes
        if t.size:
            if t.min() < 0 or t.max() >= c:
                bad = np.unique(t[(t < 0) | (t >= c)])[:5].tolist()
                raise ValueError(
                    f"ground truth holds values {bad} that are neither classes 0..{c - 1}"
                    f" nor the ignore label {self.ignore_index}{where}"
                )
            if p.min() < 0 or p.max() >= c:
                bad = np.unique(p[(p < 0) | (p >= c)])[:5].tolist()
                raise ValueError(f"prediction holds values {bad} outside classes 0..{c - 1}{where}")
            self.matrix += np.bincount(t * c + p, minlength=c * c).reshape(c, c)
        self.count += 1 if pred.ndim == 2 else pred.shape[0]

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another state (e.g. a shard's confusion matrix); exact, integer counts. Returns self."""
        if type(other) is not type(self):
            raise ValueError(f"cannot merge a {type(other).__name__} into a {type(self).__name__}")
        for name in ("num_classes", "ignore_index", "class_names"):
            if getattr(self, name) != getattr(other, name):
                raise ValueError(f"cannot merge ConfusionMatrix states with different {name}")
        self.matrix += other.matrix
        self.count += other.count
        return self

    def per_class_iou(self) -> np.ndarray:
        """IoU per class (float64, length C); 0 for classes absent from both gt and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        denom = self.matrix.sum(0) + self.matrix.sum(1) - tp
        return np.divide(tp, denom, out=np.zeros_like(tp), where=denom > 0)

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise RuntimeError("ConfusionMatrix.compute() called before any update()")
        iou = self.per_class_iou()
        tp = np.diag(self.matrix)
        present = (self.matrix.sum(0) + self.matrix.sum(1)) > 0
        total = self.matrix.sum()
        out = {
            "mIoU": float(iou.mean()),
            "mIoU_fg": float(iou[1:].mean()),
            "mIoU_present": float(iou[present].mean()) if present.any() else 0.0,
            "pixel_accuracy": float(tp.sum() / total) if total else 0.0,
        }
        for name, value in zip(self.class_names, iou):
            out[f"IoU/{name}"] = float(value)
        return out
