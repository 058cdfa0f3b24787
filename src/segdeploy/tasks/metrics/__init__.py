"""Accuracy metrics for the three task families segdeploy evaluates.

Every metric object follows one small protocol (:class:`Metric`):

* ``update(pred, target)`` scores one image (or, where a class says so, a batch);
* ``compute() -> dict[str, float]`` returns plain floats, ready for a JSON record;
* ``reset()`` forgets everything;
* ``merge(other)`` adds another state of the same metric and configuration (a shard's), so that
  states computed on parts of a dataset combine to the whole dataset's score (used by
  ``segdeploy eval --engine ray``; see :mod:`segdeploy.tasks.metrics.accumulate`);
* ``count`` is the number of images scored so far;
* ``definition`` is a JSON-serialisable dict that says what is computed and how it is aggregated,
  so an evaluation record carries the convention next to the number.

Modules (imported lazily so that ``import segdeploy.tasks.metrics`` stays cheap):

* :mod:`segdeploy.tasks.metrics.saliency` -- salient-object detection (maxF, meanF, adpF, MAE, S-measure,
  E-measure, weighted F), computed by PySODMetrics;
* :mod:`segdeploy.tasks.metrics.overlap` -- binary-mask Dice (milesial/Pytorch-UNet) and IoU
  (4uiiurz1/pytorch-nested-unet), per-image mean and pooled;
* :mod:`segdeploy.tasks.metrics.confusion` -- multi-class confusion-matrix mIoU with an ignore label
  (1-stage-wseg ``eval_seg.py``).

See ``/work/shared/METRICS.md`` (project docs) for the definitions these follow.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Metric(Protocol):
    """The protocol every segdeploy metric object implements."""

    count: int
    definition: dict[str, Any]

    def update(self, pred: Any, target: Any) -> None:
        """Add one prediction/ground-truth pair."""

    def compute(self) -> dict[str, float]:
        """Return the aggregated scores as plain floats."""

    def reset(self) -> None:
        """Forget every pair seen so far."""

    def merge(self, other: Any) -> Any:
        """Add another state of the same metric (e.g. one shard's); returns self."""


_LAZY = {
    "SaliencyMetrics": "segdeploy.tasks.metrics.saliency",
    "FMeasure": "segdeploy.tasks.metrics.saliency",
    "MAE": "segdeploy.tasks.metrics.saliency",
    "SMeasure": "segdeploy.tasks.metrics.saliency",
    "EMeasure": "segdeploy.tasks.metrics.saliency",
    "WeightedFMeasure": "segdeploy.tasks.metrics.saliency",
    "Dice": "segdeploy.tasks.metrics.overlap",
    "IoU": "segdeploy.tasks.metrics.overlap",
    "BinaryOverlap": "segdeploy.tasks.metrics.overlap",
    "ConfusionMatrix": "segdeploy.tasks.metrics.confusion",
}

__all__ = ["Metric", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'segdeploy.tasks.metrics' has no attribute {name!r}")
