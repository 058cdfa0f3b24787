"""Model specifications: what a network is, how its input is prepared and how its output is read.

A :class:`ModelSpec` is data: the network is built on demand from ``builder`` (a callable, or a
``"module:callable"`` path resolved with :func:`importlib.import_module`), so a spec can be pickled
to another process (Ray workers, server replicas) and compared by value.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

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
class PublishedMetric:
    """One accuracy number published for a set of weights (the one place such numbers live).

    Attributes:
        metric: segdeploy's metric key it corresponds to (``maxF``, ``MAE``, ``dice``, ``iou``,
            ``mIoU``, ``cosine``), on segdeploy's scale (fractions, not percent).
        value: the number.
        source: who printed it ("U²-Net paper (Pattern Recognition 2020)", "seed guide 000", ...).
        dataset: dataset layout name it was measured on (None when not a dataset score).
        hardware, software: where it was measured, as the source names it ("—" = not stated).
        batch_size, precision: when the source states them.
        note: what a reader must know to compare with it.
    """

    metric: str
    value: float
    source: str
    dataset: str | None = None
    hardware: str = "—"
    software: str = ""
    batch_size: int | None = None
    precision: str | None = None
    note: str = ""

    def describe(self) -> str:
        where = f" on {self.dataset}" if self.dataset else ""
        return f"{self.metric} {self.value}{where} ({self.source})"


@dataclass(frozen=True)
class WeightsVariant:
    """One set of weights a model can run with, where it comes from and what it is known to score.

    Attributes:
        name: how ``--weights`` names it ("official", ...).
        file_name: the checkpoint's file name as published.
        url: where the publisher offers it (printed for the user; never downloaded by segdeploy).
        sha256: of the published file, when known.
        licence: of the weights.
        provenance: who made them, from which code and data, and how they reached this package.
        how_to_get: one sentence telling a user how to obtain the file.
        published: the accuracy numbers published for these weights (:class:`PublishedMetric`).
        asset: a file inside the segdeploy package (``assets/...``) holding these weights, so that
            ``--weights NAME`` works offline; None when the user must supply the file.
    """

    name: str = "official"
    file_name: str | None = None
    url: str | None = None
    sha256: str | None = None
    licence: str = ""
    provenance: str = ""
    how_to_get: str = ""
    published: tuple[PublishedMetric, ...] = ()
    asset: str | None = None


def strip_module_prefix(state: dict[str, Any]) -> dict[str, Any]:
    """The default checkpoint filter: drop DataParallel's ``module.`` key prefix."""
    return {(key[len("module."):] if key.startswith("module.") else key): value for key, value in state.items()}


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry: everything segdeploy knows about a model.

    Attributes:
        name: registry name (``segdeploy predict NAME``).
        title: one line for ``segdeploy list``.
        task: "saliency", "binary" or "semantic" (see :mod:`segdeploy.tasks`).
        num_classes: channels of the class output (1 for a single-logit binary model).
        builder: callable, or "module:callable", returning the ``nn.Module`` (random init).
        builder_kwargs: keyword arguments for ``builder``.
        preprocess, decode: see :class:`Preprocess` and :class:`Decode`.
        input_size: (H, W) of the export / benchmark input.
        source: upstream repository @ commit and files the network follows.
        license: of the upstream code.
        manifest: file name in ``segdeploy/assets/manifests`` (or an absolute path) holding the
            upstream state_dict layout; None = the module's own layout is the reference.
        weights: the known weight variants; the first is the official one.
        default_weights: the variant used when no ``--weights`` is given (only for weights that
            ship with the package); None = the user must choose.
        output_names: names of the forward's outputs, in order (ONNX output names).
        dynamic_spatial: the network accepts other input sizes than ``input_size``.
        notes: known differences from upstream, shown by ``segdeploy info``.
        checkpoint_filter: ``state_dict -> state_dict`` applied to a checkpoint file before it is
            checked against the layout (strip ``module.``, drop ``mask_values``, ...).
        protocol: "module:Class" of the test-time protocol the model's evaluation uses (wseg:
            multi-scale + flip + CRF); None = single view through the pipeline. The class is built
            from the evaluation's protocol settings and has ``name`` ("single" = no protocol),
            ``labels(image, forward)`` and ``describe()``.
        int8_float_layers: parts of ONNX node names (module paths as the exporter writes them,
            e.g. "/stage2d/rebnconv1d/") of convolutions every int8 path keeps float, because
            quantizing them breaks the fidelity gate on the trained weights (measured, with the
            numbers, where the model registers it).
        max_input_side: the longest side an input is reduced to before a native-resolution model
            sees it (None = no limit); keeps memory bounded on large photos.
    """

    name: str
    title: str
    task: str
    num_classes: int
    builder: str | Callable[..., Any]
    preprocess: Preprocess
    decode: Decode
    input_size: tuple[int, int]
    builder_kwargs: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    license: str = ""
    manifest: str | None = None
    weights: tuple[WeightsVariant, ...] = ()
    default_weights: str | None = None
    output_names: tuple[str, ...] = ("output",)
    dynamic_spatial: bool = True
    notes: str = ""
    checkpoint_filter: Callable[[dict[str, Any]], dict[str, Any]] = strip_module_prefix
    protocol: str | None = None
    max_input_side: int | None = None
    int8_float_layers: tuple[str, ...] = ()

    def build(self):
        """Construct the torch.nn.Module (random init, eval mode not set)."""
        factory = self.builder
        if isinstance(factory, str):
            module_name, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module_name), attr)
        return factory(**dict(self.builder_kwargs))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view (callables as "module:name")."""
        from dataclasses import asdict, fields

        data = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if callable(value):
                value = f"{getattr(value, '__module__', '?')}:{getattr(value, '__qualname__', repr(value))}"
            elif hasattr(value, "__dataclass_fields__"):
                value = asdict(value)
            elif f.name == "weights":
                value = [asdict(v) for v in value]
            elif isinstance(value, Mapping):
                value = dict(value)
            data[f.name] = value
        return data

    @property
    def official(self) -> WeightsVariant:
        """The first (official) weights variant; an empty one when none is known."""
        return self.weights[0] if self.weights else WeightsVariant()

    def weights_variant(self, name: str) -> WeightsVariant | None:
        """The variant called ``name``, or None."""
        return next((variant for variant in self.weights if variant.name == name), None)

    @property
    def how_to_get(self) -> str:
        """How to obtain the official weights, for error messages."""
        variant = self.official
        text = variant.how_to_get
        if variant.url and variant.url not in text:
            text = f"{text} ({variant.url})" if text else f"Download it from {variant.url}"
        return text
