"""Model specifications: what a network is, how its input is prepared and how its output is read.

A :class:`ModelSpec` is pure data. It never imports torch, so ``segdeploy list`` and
``segdeploy info`` stay fast; the network itself is built on demand from ``builder``,
a ``"module:callable"`` path resolved with :func:`importlib.import_module`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Literal

Task = Literal["saliency", "binary", "semantic"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How a decoded RGB uint8 image becomes the network's float32 CHW input.

    Steps, in order: resize (``size`` squash, or ``scale`` factor, or native) with the
    ``resize_library``'s convention; channel order; ``scaling``; ``(x - mean) / std``;
    a final division by ``post_divide``.

    Attributes:
        size: (height, width) the image is squashed to, aspect ratio not kept; None = no squash.
        scale: factor on the native size, new size = (int(scale*W), int(scale*H)) as upstream
            Carvana code truncates; None = no scaling.
        interpolation: "bilinear", "bicubic" or "nearest".
        resize_library: whose resampling convention is reproduced: "pil", "cv2" or "skimage"
            (skimage.transform.resize, order 1, mode='constant', no anti-aliasing, as in the
            scikit-image 0.14 that U-2-Net pins).
        channel_order: "RGB" or "BGR" (4uiiurz1 reads with cv2 and trains on BGR).
        scaling: "div255" (x/255) or "divmax" (x / max(x) over the whole image, U-2-Net).
        mean, std: per-channel normalisation applied after scaling, in the *model's* channel order;
            None = none.
        post_divide: divide once more at the end (4uiiurz1 divides by 255 a second time).
        multiple_of: the network needs height and width divisible by this (pooling depth); a
            native-size input is zero-padded bottom/right in model space and the pad cropped after.
    """

    size: tuple[int, int] | None = None
    scale: float | None = None
    interpolation: str = "bilinear"
    resize_library: str = "pil"
    channel_order: str = "RGB"
    scaling: str = "div255"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    post_divide: float = 1.0
    multiple_of: int = 1


@dataclass(frozen=True)
class Decode:
    """How the network's raw outputs become a map and a mask at the original image size.

    Attributes:
        output_index: which element of the forward's output tuple holds the map (U-2-Net: 0 =
            fused d0; wseg: 1 = masks). Ignored when the forward returns a single tensor.
        activation: applied to that output before resizing: "none" (already probabilities),
            "sigmoid" (one logit channel) or "softmax" (class logits).
        normalize: "minmax" = per-image (x - min) / (max - min) (U-2-Net's normPRED); None = none.
        resize: interpolation used to bring the map back to the original size ("bilinear").
        resize_library: "pil" (U-2-Net writes an 8-bit image and resizes it with PIL BILINEAR) or
            "torch" (F.interpolate, align_corners=False, on the float map: milesial predict.py).
        threshold: foreground threshold on the probability for binary tasks.
    """

    output_index: int = 0
    activation: str = "none"
    normalize: str | None = None
    resize: str = "bilinear"
    resize_library: str = "torch"
    threshold: float = 0.5


@dataclass(frozen=True)
class WeightsInfo:
    """Where the official checkpoint comes from and what it is known to score."""

    file_name: str | None = None
    url: str | None = None
    sha256: str | None = None
    how_to_get: str = ""
    published: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry. See DESIGN.md "Main abstractions"."""

    name: str
    title: str
    task: Task
    num_classes: int
    builder: str
    builder_kwargs: dict[str, Any]
    preprocess: Preprocess
    decode: Decode
    input_size: tuple[int, int]
    source: str
    license: str
    manifest: str
    weights: WeightsInfo = field(default_factory=WeightsInfo)
    output_names: tuple[str, ...] = ("output",)
    dynamic_spatial: bool = True
    notes: str = ""

    def build(self):
        """Construct the torch.nn.Module (random init, eval mode not set)."""
        module_name, _, attr = self.builder.partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
        return factory(**self.builder_kwargs)


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _ensure_loaded() -> None:
    if not _REGISTRY:
        importlib.import_module("segdeploy.zoo")


def list_models() -> list[str]:
    """Names of every registered model, in registration order."""
    _ensure_loaded()
    return list(_REGISTRY)


def get_spec(name: str | ModelSpec) -> ModelSpec:
    """Look a model up by name; an unknown name raises KeyError listing the known ones."""
    if isinstance(name, ModelSpec):
        return name
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(
            f"unknown model {name!r}.{hint} Known models: {', '.join(_REGISTRY)}"
        ) from None
