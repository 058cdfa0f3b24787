"""Train/validation splits of the upstream training scripts, reproduced index for index.

Both upstream splits depend on the *order* of the id list they are given, and both upstream
scripts take that order from the file system (``os.listdir`` / ``glob``), which differs between
machines and copies of the same folder. segdeploy therefore applies the upstream rule to the
**sorted** ids by default (reproducible anywhere) and offers ``order="listdir"`` to apply it to the
directory order of the machine at hand, which is what the upstream script would have seen there.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

SPLIT_ORDERS = ("sorted", "listdir")


def sklearn_val_indices(n: int, test_size: float = 0.2, random_state: int = 41) -> list[int]:
    """Indices of the test part of ``sklearn.model_selection.train_test_split(range(n), ...)``.

    4uiiurz1/pytorch-nested-unet train.py and val.py call
    ``train_test_split(img_ids, test_size=0.2, random_state=41)``. For a float ``test_size``
    scikit-learn (ShuffleSplit) takes ``n_test = ceil(test_size * n)``, draws
    ``np.random.RandomState(random_state).permutation(n)`` and returns its first ``n_test``
    entries as the test part, in that order. Legacy ``RandomState`` streams are frozen by NumPy's
    compatibility policy, so this needs no scikit-learn; the tests check it against scikit-learn.
    """
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    n_test = math.ceil(test_size * n)
    if n_test >= n:
        raise ValueError(f"test_size={test_size} leaves no training sample out of {n}")
    permutation = np.random.RandomState(random_state).permutation(n)
    return [int(i) for i in permutation[:n_test]]


def torch_val_indices(n: int, val_percent: float = 0.1, seed: int = 0) -> list[int]:
    """Indices of the validation subset of milesial/Pytorch-UNet train.py's split.

    Upstream: ``n_val = int(len(dataset) * val_percent)``, ``n_train = len - n_val``,
    ``random_split(dataset, [n_train, n_val], generator=torch.Generator().manual_seed(0))``.
    This calls torch's own ``random_split`` on ``range(n)`` (a permutation from ``torch.randperm``;
    validation = its last ``n_val`` entries), so it agrees with upstream whenever the installed
    torch's ``randperm`` stream agrees with the one used for training.
    """
    import torch
    from torch.utils.data import random_split

    if not 0.0 < val_percent < 1.0:
        raise ValueError(f"val_percent must be in (0, 1), got {val_percent}")
    n_val = int(n * val_percent)
    n_train = n - n_val
    _, val = random_split(range(n), [n_train, n_val], generator=torch.Generator().manual_seed(seed))
    return [int(i) for i in val]


def ordered_ids(entries: Mapping[str, Path], order: str) -> list[str]:
    """The ids of ``entries`` in the order a split is applied to.

    Args:
        entries: id → the directory entry upstream listed for it (an image file, or a DSB2018
            sample folder); all entries must share one parent folder.
        order: ``sorted`` (by id) or ``listdir`` (the parent folder's ``os.listdir`` order, which
            is what upstream's ``listdir``/``glob`` returned on this machine).
    """
    if order not in SPLIT_ORDERS:
        raise ValueError(f"split order must be one of {', '.join(SPLIT_ORDERS)}, got {order!r}")
    if order == "sorted":
        return sorted(entries)
    parents = {p.parent for p in entries.values()}
    if len(parents) != 1:
        raise ValueError(f"order='listdir' needs entries in one folder, got {len(parents)} folders")
    by_name = {p.name: i for i, p in entries.items()}
    return [by_name[name] for name in os.listdir(parents.pop()) if name in by_name]
