"""Network families. Each module defines nn.Modules whose state_dict layout equals upstream's."""

from __future__ import annotations

import os

from ..specs import ModelSpec, get_spec
from ..weights import DEFAULT_SEED, load_weights


def create_model(name: str | ModelSpec, weights: str | os.PathLike | None = None, *,
                 seed: int = DEFAULT_SEED, eval_mode: bool = True):
    """Build a registry model and load its weights.

    Args:
        name: registry name (see :func:`segdeploy.list_models`) or a ModelSpec.
        weights: path to the official checkpoint as published, or "random" for deterministic random
            weights. None raises an error that says how to get the official file.
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
