"""Mergeable running sums: the state every metric keeps, so that shards combine to the dataset score.

A metric's state is a set of sums and counts. Scoring a dataset in shards (threads, Ray tasks,
machines) and merging the shard states must give the score of one pass over the whole dataset.
Integer counts merge exactly. Float sums are kept with Neumaier's compensated summation (a running
sum plus a running rounding error), so the merged total differs from the one-pass total by at most a
few units in the last place (relative ~1e-16), whatever the shard boundaries and merge order — where a
plain float sum drifts by up to n·1e-16.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class CompensatedSum:
    """A float64 scalar or fixed-length vector sum with Neumaier compensation.

    ``add(x)`` adds a value (broadcast to the shape), ``merge(other)`` adds another sum's total and
    error term, ``value`` is the compensated total (float for scalars, float64 array for vectors).
    """

    __slots__ = ("hi", "lo")

    def __init__(self, shape: int | tuple[int, ...] = ()) -> None:
        self.hi = np.zeros(shape, dtype=np.float64)
        self.lo = np.zeros(shape, dtype=np.float64)

    def add(self, x: Any) -> None:
        x = np.asarray(x, dtype=np.float64)
        total = self.hi + x
        # the rounding error of hi + x, taken from whichever operand is larger in magnitude
        err = np.where(np.abs(self.hi) >= np.abs(x), (self.hi - total) + x, (x - total) + self.hi)
        self.hi = total
        self.lo = self.lo + err

    def merge(self, other: "CompensatedSum") -> None:
        if self.hi.shape != other.hi.shape:
            raise ValueError(f"cannot merge sums of shapes {self.hi.shape} and {other.hi.shape}")
        self.add(other.hi)
        self.lo = self.lo + other.lo

    @property
    def value(self) -> Any:
        total = self.hi + self.lo
        return float(total) if total.ndim == 0 else total

    def __getstate__(self):
        return (self.hi, self.lo)

    def __setstate__(self, state) -> None:
        self.hi, self.lo = state


def check_mergeable(a: Any, b: Any, *fields: str) -> None:
    """Raise ValueError unless ``b`` is a metric of ``a``'s class with the same configuration.

    Args:
        a, b: metric objects.
        fields: attribute names that must be equal (thresholds, β², class count, ...).
    """
    if type(a) is not type(b):
        raise ValueError(f"cannot merge a {type(b).__name__} into a {type(a).__name__}")
    for name in fields:
        va, vb = getattr(a, name), getattr(b, name)
        if va != vb:
            raise ValueError(f"cannot merge {type(a).__name__} states with different {name}: {va!r} vs {vb!r}")
