"""The 1-stage-wseg test-time protocol: multi-scale + flip views, merge, background discount, dense CRF.

Facts from visinf/1-stage-wseg @ cfe5784 (``infer_val.py``, ``datasets/pascal_voc_ms.py``
``MultiscaleLoader``, ``utils/inference_tools.py`` ``MergeMultiScale``, ``utils/dcrf.py``; config
``configs/voc_resnet38.yaml`` TEST section). Re-implemented here; no upstream code.

1. :func:`make_views` -- for each scale s in (1, 0.5, 1.5, 2): resize the RGB image with PIL bicubic to
   ``(round(W·s), round(H·s))`` (Python's ``round``, i.e. half-to-even); views with an odd index are
   flipped left-right; each view is centre-padded into a ``PAD_SIZE`` canvas (1024×1024) with
   ``pad_l = (PW − w) // 2``, ``pad_t = (PH − h) // 2``; pixels become ``(x/255 − mean)/std``
   (ImageNet, RGB) and the padding is exactly 0. Order: [1, 1f, .5, .5f, 1.5, 1.5f, 2, 2f].
2. The network runs on the 8-view batch: ``cls`` [8, 20] (logits), ``masks`` [8, 21, PH, PW].
3. :func:`merge_views` -- present classes = ``max over views of sigmoid(cls) > FP_CUT_SCORE (0.1)``; each
   view's mask is cropped to its un-padded box, bilinearly resized (``align_corners=False``, torch) to the
   original H×W, un-flipped, its 20 foreground channels multiplied by the present-class indicator; the
   views are averaged and the background channel raised to ``BG_POW`` (3). ``argmax`` gives the label map.
4. :func:`dense_crf` -- pydensecrf ``DenseCRF2D`` with unary ``−log(clip(p, 1e-5, 1))`` on the merged
   (not renormalised) map, Gaussian pairwise (sxy 3, compat 3), bilateral pairwise (sxy 80, srgb 13,
   compat 10) on the original uint8 RGB image, 10 mean-field iterations, ``argmax``.

Upstream asserts every scaled view fits the pad canvas (images over 512 px on a side fail at scale 2);
:func:`make_views` raises :class:`ValueError` in that case. Torch and pydensecrf are imported lazily.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segdeploy.core.specs import IMAGENET_MEAN, IMAGENET_STD

#: configs/voc_resnet38.yaml TEST section.
DEFAULT_SCALES: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
DEFAULT_PAD_SIZE: tuple[int, int] = (1024, 1024)  # (height, width)
FP_CUT_SCORE = 0.1
BG_POW = 3


@dataclass(frozen=True)
class ViewMeta:
    """Placement of one view inside its pad canvas."""

    scale: float
    flip: bool
    pad_t: int
    pad_l: int
    h: int  # height of the scaled image inside the canvas
    w: int  # width of the scaled image inside the canvas


@dataclass(frozen=True)
class MultiScaleMeta:
    """What :func:`merge_views` needs to undo :func:`make_views`."""

    image_hw: tuple[int, int]
    pad_size: tuple[int, int]
    views: tuple[ViewMeta, ...]


def make_views(
    image_rgb_uint8: np.ndarray,
    scales: Sequence[float] = DEFAULT_SCALES,
    flip: bool = True,
    pad_size: tuple[int, int] = DEFAULT_PAD_SIZE,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> tuple[np.ndarray, MultiScaleMeta]:
    """Build the multi-scale, flipped, centre-padded input batch of the wseg test protocol.

    Args:
        image_rgb_uint8: HxWx3 uint8 RGB image.
        scales: resize factors, one (or two, with ``flip``) views each, in this order.
        flip: add a left-right flipped copy after every scale (odd view indices).
        pad_size: ``(PH, PW)`` canvas size (upstream 1024×1024; tests use small ones).
        mean: per-channel mean (RGB) applied after dividing by 255.
        std: per-channel std (RGB).

    Returns:
        ``(batch, meta)``: float32 ``[V, 3, PH, PW]`` with V = len(scales)·(2 if flip else 1), and the
        :class:`MultiScaleMeta` that :func:`merge_views` uses to crop, resize and unflip.

    Raises:
        ValueError: the image is not HxWx3 uint8, or a scaled view does not fit the pad canvas.
    """
    from PIL import Image

    img = np.asarray(image_rgb_uint8)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"make_views needs an HxWx3 uint8 RGB image; got shape {img.shape}, dtype {img.dtype}")
    height, width = img.shape[:2]
    ph, pw = (int(v) for v in pad_size)
    mean_a = np.asarray(mean, dtype=np.float64).reshape(1, 1, 3)
    std_a = np.asarray(std, dtype=np.float64).reshape(1, 1, 3)

    pil = Image.fromarray(np.ascontiguousarray(img))
    flips = (False, True) if flip else (False,)
    batch = np.zeros((len(scales) * len(flips), 3, ph, pw), dtype=np.float32)
    views: list[ViewMeta] = []
    for s in scales:
        # Python round (half-to-even), as upstream's int(round(size * scale))
        w, h = int(round(width * s)), int(round(height * s))
        if w < 1 or h < 1:
            raise ValueError(f"scale {s} shrinks the {width}x{height} image to {w}x{h}")
        if h > ph or w > pw:
            raise ValueError(
                f"scale {s} makes the {width}x{height} image {w}x{h}, larger than the pad canvas {pw}x{ph}"
                f" (upstream asserts the same; images over {min(ph, pw) // 2} px on a side fail at scale 2)"
            )
        scaled = np.asarray(pil.resize((w, h), resample=Image.BICUBIC))
        pad_t, pad_l = (ph - h) // 2, (pw - w) // 2
        for f in flips:
            view = scaled[:, ::-1] if f else scaled
            # float64 arithmetic then float32, as upstream's Normalize (uint8 / 255. in numpy)
            norm = ((view / 255.0 - mean_a) / std_a).astype(np.float32)
            batch[len(views), :, pad_t : pad_t + h, pad_l : pad_l + w] = norm.transpose(2, 0, 1)
            views.append(ViewMeta(scale=float(s), flip=f, pad_t=pad_t, pad_l=pad_l, h=h, w=w))
    return batch, MultiScaleMeta(image_hw=(height, width), pad_size=(ph, pw), views=tuple(views))


def merge_views(
    cls: Any,
    masks: Any,
    meta: MultiScaleMeta,
    fp_cut: float = FP_CUT_SCORE,
    bg_pow: float = BG_POW,
) -> np.ndarray:
    """Merge per-view class scores and masks into class probabilities at the original size.

    Args:
        cls: ``[V, C−1]`` class logits (numpy or torch), foreground classes only.
        masks: ``[V, C, PH, PW]`` per-view softmax masks (channel 0 = background).
        meta: from :func:`make_views` for the same image.
        fp_cut: a foreground class is kept iff ``max over views of sigmoid(cls) > fp_cut``.
        bg_pow: exponent applied to the averaged background channel.

    Returns:
        float32 ``[C, H, W]`` merged scores; ``argmax(0)`` is the prediction. Not renormalised (the
        CRF unary uses them as they are).

    Raises:
        ValueError: shapes disagree with ``meta``.
    """
    import torch
    import torch.nn.functional as F

    cls_t = torch.as_tensor(cls).detach().cpu().float()
    masks_t = torch.as_tensor(masks).detach().cpu().float()
    n_views = len(meta.views)
    if masks_t.ndim != 4 or masks_t.shape[0] != n_views or tuple(masks_t.shape[2:]) != tuple(meta.pad_size):
        raise ValueError(
            f"masks must be [{n_views}, C, {meta.pad_size[0]}, {meta.pad_size[1]}] to match the views;"
            f" got {tuple(masks_t.shape)}"
        )
    n_classes = masks_t.shape[1]
    if cls_t.shape != (n_views, n_classes - 1):
        raise ValueError(f"cls must be [{n_views}, {n_classes - 1}]; got {tuple(cls_t.shape)}")

    present = (torch.sigmoid(cls_t).max(dim=0).values > fp_cut).to(masks_t.dtype)
    total = torch.zeros((n_classes, *meta.image_hw), dtype=masks_t.dtype)
    for i, v in enumerate(meta.views):
        crop = masks_t[i : i + 1, :, v.pad_t : v.pad_t + v.h, v.pad_l : v.pad_l + v.w]
        up = F.interpolate(crop, size=meta.image_hw, mode="bilinear", align_corners=False)[0]
        if v.flip:
            up = torch.flip(up, dims=(-1,))
        up[1:] *= present[:, None, None]
        total = total + up
    merged = total.numpy() / n_views
    merged[0] = np.power(merged[0], bg_pow)
    return merged.astype(np.float32, copy=False)


def dense_crf_probs(
    image_rgb_uint8: np.ndarray,
    probs: np.ndarray,
    n_iter: int = 10,
    gaussian_sxy: float = 3,
    gaussian_compat: float = 3,
    bilateral_sxy: float = 80,
    bilateral_srgb: float = 13,
    bilateral_compat: float = 10,
    clip: float = 1e-5,
) -> np.ndarray:
    """Run the upstream dense CRF and return its ``[C, H, W]`` marginals (float32).

    Args:
        image_rgb_uint8: HxWx3 uint8 RGB image at the probabilities' size.
        probs: ``[C, H, W]`` scores, e.g. from :func:`merge_views`; unary = −log(clip(p, clip, 1)).
        n_iter: mean-field iterations (10).
        gaussian_sxy, gaussian_compat: smoothness kernel (3, 3).
        bilateral_sxy, bilateral_srgb, bilateral_compat: appearance kernel (80, 13, 10).
        clip: lower clip of the probabilities before the log.

    Raises:
        ValueError: image/probability shapes disagree.
        ImportError: pydensecrf (PyPI ``pydensecrf2``) is not installed.
    """
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("dense CRF needs pydensecrf: pip install pydensecrf2") from exc

    img = np.asarray(image_rgb_uint8)
    probs = np.asarray(probs)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"dense_crf needs an HxWx3 uint8 RGB image; got shape {img.shape}, dtype {img.dtype}")
    if probs.ndim != 3 or probs.shape[1:] != img.shape[:2]:
        raise ValueError(f"probs must be [C, {img.shape[0]}, {img.shape[1]}]; got {probs.shape}")
    n_labels, h, w = probs.shape
    unary = np.ascontiguousarray(-np.log(np.clip(probs, clip, 1.0)).reshape(n_labels, -1).astype(np.float32))
    crf = dcrf.DenseCRF2D(w, h, n_labels)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=gaussian_sxy, compat=gaussian_compat)
    crf.addPairwiseBilateral(
        # pydensecrf's typed memoryview rejects read-only buffers (e.g. np.asarray of a PIL image).
        sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=np.array(img, order="C", copy=True), compat=bilateral_compat
    )
    q = crf.inference(n_iter)
    return np.asarray(q, dtype=np.float32).reshape(n_labels, h, w)


def dense_crf(image_rgb_uint8: np.ndarray, probs: np.ndarray, **kwargs: Any) -> np.ndarray:
    """Dense-CRF label map (uint8 HxW); keyword arguments as :func:`dense_crf_probs`."""
    return np.argmax(dense_crf_probs(image_rgb_uint8, probs, **kwargs), axis=0).astype(np.uint8)


@dataclass
class MultiScaleResult:
    """Output of :func:`run_protocol` for one image."""

    probs: np.ndarray  # float32 [C, H, W] merged scores
    labels: np.ndarray  # uint8 [H, W] argmax of probs
    labels_crf: np.ndarray | None  # uint8 [H, W] after the dense CRF (None when crf=False)


def run_protocol(
    image_rgb_uint8: np.ndarray,
    forward: Callable[[np.ndarray], Sequence[Any]],
    *,
    crf: bool = True,
    scales: Sequence[float] = DEFAULT_SCALES,
    flip: bool = True,
    pad_size: tuple[int, int] = DEFAULT_PAD_SIZE,
    fp_cut: float = FP_CUT_SCORE,
    bg_pow: float = BG_POW,
) -> MultiScaleResult:
    """Full test-time protocol for one image.

    Args:
        image_rgb_uint8: HxWx3 uint8 RGB image.
        forward: maps the ``[V, 3, PH, PW]`` float32 batch to ``(cls, masks)`` (e.g. ``Runtime.run``,
            whose outputs are in ``("cls", "masks")`` order).
        crf: also run :func:`dense_crf`.
        scales, flip, pad_size: as :func:`make_views`.
        fp_cut, bg_pow: as :func:`merge_views`.
    """
    batch, meta = make_views(image_rgb_uint8, scales=scales, flip=flip, pad_size=pad_size)
    outputs = forward(batch)
    if len(outputs) < 2:
        raise ValueError(f"forward must return (cls, masks); got {len(outputs)} output(s)")
    probs = merge_views(outputs[0], outputs[1], meta, fp_cut=fp_cut, bg_pow=bg_pow)
    labels = np.argmax(probs, axis=0).astype(np.uint8)
    labels_crf = dense_crf(image_rgb_uint8, probs) if crf else None
    return MultiScaleResult(probs=probs, labels=labels, labels_crf=labels_crf)


#: The protocols ``segdeploy eval --protocol`` offers: one view through the pipeline, the merged
#: views, or the merged views with the dense CRF (the number the upstream README reports).
PROTOCOLS = ("single", "multiscale", "multiscale+crf")


@dataclass(frozen=True)
class MultiScaleProtocol:
    """The model's test-time protocol as an evaluation runs it (``spec.protocol`` names this class).

    Attributes:
        name: one of :data:`PROTOCOLS`; "single" asks for no protocol (one view per image).
        scales, flip, pad_size: the views (:func:`make_views`).
    """

    name: str = "multiscale+crf"
    scales: tuple[float, ...] = DEFAULT_SCALES
    flip: bool = True
    pad_size: tuple[int, int] = DEFAULT_PAD_SIZE

    def __post_init__(self) -> None:
        if self.name not in PROTOCOLS:
            raise ValueError(f"protocol {self.name!r}: choose from {', '.join(PROTOCOLS)}")

    def labels(self, image_rgb_uint8: np.ndarray, forward: Callable[[np.ndarray], Sequence[Any]]) -> np.ndarray:
        """The uint8 label map of one image: merged views, then the CRF when the protocol has it."""
        crf = self.name.endswith("crf")
        result = run_protocol(image_rgb_uint8, forward, crf=crf, scales=self.scales, flip=self.flip,
                              pad_size=self.pad_size)
        return result.labels_crf if crf else result.labels

    def describe(self) -> dict[str, Any]:
        """What an evaluation record states about the protocol that produced its scores."""
        return {"scales": list(self.scales), "flip": self.flip, "pad_size": list(self.pad_size),
                "fp_cut": FP_CUT_SCORE, "bg_pow": BG_POW, "crf": self.name.endswith("crf")}
