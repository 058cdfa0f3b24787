"""Checkpoints: read the official files as published, check them strictly, or make random weights.

Every model built here carries a :class:`WeightsRecord` (``module.segdeploy_weights``) so that each
output record can say which weights produced it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segdeploy.core.errors import WeightsError
from segdeploy.core.registry import get_spec, list_models
from segdeploy.core.specs import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch

RANDOM = "random"
DEFAULT_SEED = 0


@dataclass(frozen=True)
class WeightsRecord:
    """Which weights a model carries. ``kind`` is "file" or "random"."""

    kind: str
    path: str | None = None
    sha256: str | None = None
    seed: int | None = None
    variant: str | None = None

    @property
    def is_random(self) -> bool:
        return self.kind == RANDOM

    def describe(self) -> str:
        if self.is_random:
            return f"random weights (seed {self.seed}) — outputs are meaningless, for trying the pipeline"
        return f"{self.path} (sha256 {self.sha256[:12]}…)" if self.sha256 else str(self.path)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=None)
def manifest(name: str) -> list[tuple[str, tuple[int, ...], str]]:
    """The upstream state_dict layout [(key, shape, dtype)] of a manifest: a file name in
    ``segdeploy/assets/manifests`` or a path (plugins ship their own)."""
    if os.path.isabs(name):
        text = Path(name).read_text()
    else:
        text = resources.files("segdeploy").joinpath("assets", "manifests", name).read_text()
    return [(key, tuple(shape), dtype) for key, shape, dtype in json.loads(text)["state_dict"]]


def read_checkpoint(path: str | os.PathLike, spec: ModelSpec | None = None) -> dict[str, "torch.Tensor"]:
    """Load a checkpoint file into a flat {key: tensor} dict as upstream code would use it.

    Accepts a plain state_dict (all seed checkpoints), or one wrapped under "state_dict"/"model",
    as a PyTorch file (read with ``weights_only=True``: no pickled code ever runs) or a
    ``.safetensors`` file. The model's ``checkpoint_filter`` then drops what is not a weight
    (DataParallel's ``module.`` prefix, Pytorch-UNet's ``mask_values``, ...).
    """
    import torch

    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{path}: is a folder; --weights takes a checkpoint file (.pth/.pt/.safetensors)")
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    with open(path, "rb") as handle:
        head = handle.read(16)
    # An ONNX protobuf starts with field 1 (ir_version, a varint: byte 0x08); a PyTorch file is a
    # zip ("PK") or a bare pickle (0x80).
    if path.suffix.lower() == ".onnx" or (head[:1] == b"\x08" and head[:2] != b"PK"):
        raise WeightsError(f"{path}: is an ONNX file, not a PyTorch checkpoint; run it with --onnx {path}")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path))
        except Exception as exc:
            raise WeightsError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from exc
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for corrupt / foreign files
            reason = str(exc).split("\n")[0]
            if "weights_only" in str(exc) or "Unsupported global" in str(exc):
                reason = "it holds pickled Python objects besides tensors, which segdeploy never unpickles"
            raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a state_dict (a dict of tensors), found {type(obj).__name__}")
    state = (spec.checkpoint_filter if spec is not None else _default_filter)(dict(obj))
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise WeightsError(f"{path}: tensor {key!r} holds NaN or infinite values (a corrupt or diverged checkpoint)")
    return state


def _default_filter(state: dict[str, Any]) -> dict[str, Any]:
    from segdeploy.core.specs import strip_module_prefix

    state.pop("mask_values", None)
    return strip_module_prefix(state)


def _layout_score(state: dict[str, Any], layout: list[tuple[str, tuple[int, ...], str]]) -> float:
    """Share of the layout's entries that the checkpoint has with the same shape (Jaccard-like)."""
    matched = sum(1 for key, shape, _ in layout if key in state and tuple(state[key].shape) == shape)
    return matched / max(len(layout), len(state))


def best_matching_model(state: dict[str, Any]) -> tuple[str, float]:
    """The registry model whose upstream layout this checkpoint fits best, and the fit in [0, 1]."""
    scores = {}
    for name in list_models():
        if get_spec(name).manifest:
            scores[name] = _layout_score(state, manifest(get_spec(name).manifest))
    if not scores:
        return "", 0.0
    best = max(scores, key=scores.get)
    return best, scores[best]


def check_layout(spec: ModelSpec, state: dict[str, Any], origin: str, expected=None) -> None:
    """Raise WeightsError naming missing, unexpected and shape-mismatched keys (first few, counts)."""
    if expected is None:
        expected = {k: s for k, s, _ in manifest(spec.manifest)} if spec.manifest else {}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k])}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k])
    ]
    if not (missing or unexpected or mismatched):
        return
    lines = [f"{origin} does not fit model {spec.name!r}:"]
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            shown = ", ".join(items[:4]) + (", …" if len(items) > 4 else "")
            lines.append(f"  {len(items)} {label}: {shown}")
    guess, fit = best_matching_model(state)
    if guess != spec.name and fit > 0.9:
        lines.append(f"  This file looks like a {guess!r} checkpoint ({fit:.0%} of its keys and shapes match): "
                     f"try `segdeploy predict {guess} ...` / create_model({guess!r}, ...).")
    raise WeightsError("\n".join(lines))


def random_state_dict(module: "torch.nn.Module", seed: int = DEFAULT_SEED) -> dict[str, "torch.Tensor"]:
    """Deterministic, non-trivial weights for ``module``'s layout (same seed, same tensors).

    Convolution weights ~ N(0, 2/fan_in) (He init, keeps activations bounded through deep nets);
    biases ~ N(0, 0.1); BatchNorm gamma ~ U(0.5, 1.5), beta ~ N(0, 0.1), running mean ~ N(0, 0.1),
    running var ~ U(0.5, 2.0); integer buffers (num_batches_tracked) 0; other float buffers (wseg's
    PAMR kernels) are kept as the module built them. Tensors are drawn in state_dict order from one
    torch.Generator, so the result depends only on the layout and the seed.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    buffers = {name for name, _ in module.named_buffers()}
    out = {}
    for key, ref in module.state_dict().items():
        shape = ref.shape
        if not ref.is_floating_point():
            out[key] = torch.zeros_like(ref)
            continue
        leaf = key.rsplit(".", 1)[-1]
        if key in buffers and leaf not in ("running_mean", "running_var"):
            out[key] = ref.clone()
        elif leaf == "running_var":
            out[key] = torch.rand(shape, generator=gen) * 1.5 + 0.5
        elif leaf == "running_mean":
            out[key] = torch.randn(shape, generator=gen) * 0.1
        elif ref.dim() >= 2:
            # Conv2d (out, in, kh, kw): each output sums in*kh*kw taps. ConvTranspose2d (in, out,
            # k, k) with stride k: each output pixel sums exactly `in` taps.
            transposed = isinstance(_owner(module, key), torch.nn.ConvTranspose2d)
            fan_in = ref.shape[0] if transposed else ref[0].numel()
            out[key] = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
        elif leaf == "weight":  # 1-D weight: a normalisation layer's gamma
            out[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            out[key] = torch.randn(shape, generator=gen) * 0.1
    return out


def _owner(module, key: str):
    path = key.rsplit(".", 1)[0]
    try:
        return module.get_submodule(path) if path != key else module
    except AttributeError:
        return None


def resolve_weights(spec: ModelSpec, weights: str | os.PathLike | None) -> str | os.PathLike:
    """The checkpoint to load: a path, "random", or the package file of a named weights variant.

    None means the model's default variant (only models whose weights ship with the package have
    one). A variant name ("official") resolves to its packaged file when there is one.

    Raises:
        WeightsError: no weights given and none ship with the package (the message says how to get
            them); a variant name whose file must be supplied by the user.
    """
    if weights is None:
        if spec.default_weights is None:
            raise WeightsError(
                f"model {spec.name!r} needs weights. {spec.how_to_get} "
                "Or pass --weights random (Python: weights='random') to try the pipeline with "
                "deterministic random weights.")
        weights = spec.default_weights
    if str(weights) == RANDOM:
        return RANDOM
    variant = spec.weights_variant(str(weights)) if not os.path.exists(weights) else None
    if variant is not None:
        if variant.asset is None:
            raise WeightsError(f"weights {variant.name!r} of {spec.name!r} do not ship with segdeploy. {spec.how_to_get}")
        return str(resources.files("segdeploy").joinpath(*variant.asset.split("/")))
    return weights


def load_weights(model: "torch.nn.Module", spec: ModelSpec, weights: str | os.PathLike | None,
                 seed: int = DEFAULT_SEED) -> WeightsRecord:
    """Put weights into ``model`` (in place) and return what was loaded.

    Args:
        weights: a checkpoint path, a packaged variant name ("official"), "random" for
            :func:`random_state_dict` weights, or None (the model's default variant, else an error
            that says how to get the official file).
    """
    resolved = resolve_weights(spec, weights)
    if str(resolved) == RANDOM:
        model.load_state_dict(random_state_dict(model, seed), strict=True)
        record = WeightsRecord(kind=RANDOM, seed=seed)
    else:
        state = read_checkpoint(resolved, spec)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        check_layout(spec, state, str(resolved), expected)
        reference = model.state_dict()
        for key, value in state.items():
            if value.dtype != reference[key].dtype and not (value.is_floating_point() and reference[key].is_floating_point()):
                raise WeightsError(f"{resolved}: tensor {key!r} is {value.dtype}, the model expects {reference[key].dtype}")
        model.load_state_dict(state, strict=True)
        variant = spec.weights_variant(str(weights)) if weights is not None else spec.weights_variant(spec.default_weights or "")
        record = WeightsRecord(kind="file", path=str(Path(resolved).resolve()), sha256=file_sha256(resolved),
                               variant=variant.name if variant is not None and variant.asset else None)
    model.segdeploy_weights = record
    return record
