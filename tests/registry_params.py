"""Test parameters derived from the model registry, so that adding a model family (or a plugin)
needs no edit to any test file."""

from __future__ import annotations

import math

import pytest

from segdeploy.core.registry import get_spec, list_models

#: models with more weights than this are marked slow in per-model matrices (U²-Netp, 1.1 M, and
#: the DSB UNet++, 9 M, stay in the fast set; U²-Net 44 M, wseg 105 M do not)
SLOW_ABOVE_PARAMS = 10_000_000


def parameter_count(name: str) -> int:
    """Number of weights, read from the model's manifest (cheap: no network is built)."""
    from segdeploy.zoo.checkpoints import manifest

    spec = get_spec(name)
    if not spec.manifest:
        return sum(p.numel() for p in spec.build().parameters())
    return sum(math.prod(shape) for key, shape, dtype in manifest(spec.manifest) if dtype.startswith("float"))


def small_size(name: str) -> int:
    """A small square input the network accepts: its own fixed size when that is small, else 64
    rounded up to the pooling multiple."""
    spec = get_spec(name)
    if spec.preprocess.size is not None and max(spec.preprocess.size) <= 128:
        return max(spec.preprocess.size)
    multiple = spec.preprocess.multiple_of
    return -(-64 // multiple) * multiple


def _repeats_a_layout(name: str) -> bool:
    """True when an earlier registry model has the same builder and state_dict layout (a variant,
    such as UNet++ with nearest instead of bilinear upsampling)."""
    spec = get_spec(name)
    for other in list_models():
        if other == name:
            return False
        o = get_spec(other)
        if o.builder == spec.builder and o.manifest == spec.manifest and o.manifest is not None:
            return True
    return False


def model_params(*, family_of: str | None = None, variants_slow: bool = False) -> list:
    """pytest params for every registered model (optionally one task), heavy ones marked slow (and,
    with ``variants_slow``, models repeating an earlier model's layout)."""
    names = [n for n in list_models() if family_of is None or get_spec(n).task == family_of]

    def slow(n: str) -> bool:
        return parameter_count(n) > SLOW_ABOVE_PARAMS or (variants_slow and _repeats_a_layout(n))

    return [pytest.param(n, marks=pytest.mark.slow) if slow(n) else n for n in names]
