"""The model zoo: one module per network family.

Each family module defines its ``nn.Module`` classes (state_dict layout equal to upstream's) and
registers its models with :func:`segdeploy.register_model`: preprocessing, decoding, task,
checkpoint filter, manifest, weight variants and any test-time protocol. Adding a family means
adding one module here (or a plugin package, see README "Adding a model"); nothing else changes.
"""

from __future__ import annotations

import importlib
import os
import pkgutil

from segdeploy.core.registry import get_spec
from segdeploy.core.specs import ModelSpec
from segdeploy.zoo.checkpoints import DEFAULT_SEED, load_weights

#: listed first so that `segdeploy list` shows the seed guides' order; any other module is found too
_FAMILY_ORDER = ("u2net", "unet", "nested_unet", "unet_bigmb", "wseg")
#: modules of this package that are building blocks, not families
_NOT_FAMILIES = {"checkpoints", "resnet38", "wseg_protocol"}


def _import_families() -> None:
    found = [info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")]
    ordered = [name for name in _FAMILY_ORDER if name in found]
    ordered += sorted(name for name in found if name not in ordered and name not in _NOT_FAMILIES)
    for name in ordered:
        importlib.import_module(f"{__name__}.{name}")


def create_model(name: str | ModelSpec, weights: str | os.PathLike | None = None, *,
                 seed: int = DEFAULT_SEED, eval_mode: bool = True):
    """Build a registry model and load its weights.

    Args:
        name: registry name (see :func:`segdeploy.list_models`) or a ModelSpec.
        weights: path to the official checkpoint as published, a weights-variant name that ships
            with the package ("official" for u2netp), or "random" for deterministic random
            weights. None uses the model's default variant, or raises an error that says how to
            get the official file.
        seed: seed for "random" weights.
        eval_mode: put the module in eval mode (BatchNorm uses running statistics, dropout off).

    Returns:
        The torch.nn.Module; its forward takes the preprocessed NCHW float32 batch and returns what
        the upstream forward returns. ``module.segdeploy_weights`` records the weights used.
    """
    spec = get_spec(name)
    model = spec.build()
    load_weights(model, spec, weights, seed=seed)
    if eval_mode:
        model.eval()
    model.segdeploy_spec = spec
    return model


_import_families()
