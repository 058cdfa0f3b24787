"""The Task protocol: what a kind of segmentation output means and how it is read, written and scored.

A task turns a network's selected output (one image, ``C x h x w``, padding already cropped) into a
:class:`Prediction` at the original image size, chooses the file format of its masks, and names its
metric set and the fidelity measures a conversion is judged by. The engine and the jobs call these
methods; nothing outside :mod:`segdeploy.tasks` compares a task name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import math

import numpy as np

from segdeploy.core.errors import UsageError


@dataclass(frozen=True)
class FidelityMeasure:
    """One per-image measure of a candidate's decoded output against the reference's.

    ``higher_is_better``: agreement (IoU, pixel agreement) is gated from below on a low quantile
    and the worst image; errors (MAE) from above on a high quantile and the worst image.
    """

    name: str
    higher_is_better: bool
    description: str


#: masks whose union is smaller than this share of the image are judged as if it were this large
MIN_UNION_SHARE = 0.01


def mask_iou(ref: np.ndarray, out: np.ndarray) -> float:
    """1 - |A xor B| / max(|A or B|, 1 % of the pixels): the IoU of two boolean masks, except that a
    union under 1 % of the image counts as 1 % (one flipped pixel of a 2-pixel mask is not IoU 0.5)."""
    inter = int(np.count_nonzero(ref & out))
    union = int(np.count_nonzero(ref | out))
    return 1.0 - (union - inter) / max(union, MIN_UNION_SHARE * ref.size, 1.0)


class Prediction:
    """One image's decoded output at its original size.

    Attributes:
        map: float32 HxW probability / saliency in [0, 1] (saliency, binary) or CxHxW class
            probabilities (semantic).
        mask: uint8 HxW — saliency: the 0..255 map as upstream saves it; binary: 0/1;
            semantic: class ids.

    ``map`` may be given as a function (``lazy_map``) that computes it on first use: a 144-megapixel
    saliency map is 576 MB in float32 (a 21-class map of a 12-megapixel photo, 1 GB) and writing
    the mask never needs it.
    """

    __slots__ = ("_map", "_lazy_map", "mask")

    def __init__(self, map: np.ndarray | None = None, mask: np.ndarray | None = None, *, lazy_map=None):
        if map is None and lazy_map is None:
            raise TypeError("Prediction needs map or lazy_map")
        self._map, self._lazy_map, self.mask = map, lazy_map, mask

    @property
    def map(self) -> np.ndarray:
        if self._map is None:
            self._map, self._lazy_map = self._lazy_map(), None
        return self._map

    @map.setter
    def map(self, value: np.ndarray) -> None:
        self._map, self._lazy_map = value, None

    def __repr__(self) -> str:
        shape = self._map.shape if self._map is not None else "lazy"
        return f"Prediction(map={shape}, mask={getattr(self.mask, 'shape', None)})"


def resize_float(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear, half-pixel (F.interpolate align_corners=False, no antialias) resize of CxHxW float32."""
    import cv2

    if array.shape[1:] == (height, width):
        return array
    channels = array.shape[0]
    out = np.empty((channels, height, width), dtype=np.float32)
    # cv2 handles at most 512 channels per call; chunks of 4 are its fastest path.
    for start in range(0, channels, 4):
        chunk = np.ascontiguousarray(array[start:start + 4].transpose(1, 2, 0), dtype=np.float32)
        resized = cv2.resize(chunk, (width, height), interpolation=cv2.INTER_LINEAR)
        out[start:start + 4] = resized.reshape(height, width, -1).transpose(2, 0, 1)
    return out


#: Outputs up to this many pixels are resized whole; larger ones a band of rows at a time.
BANDED_RESIZE_PIXELS = 1 << 24


def resize_u8_pil(array: np.ndarray, width: int, height: int, resample) -> np.ndarray:
    """PIL's resize of an HxW uint8 array; a large output is made a band of rows at a time.

    A whole resize holds the PIL result and its array copy at once (288 MB for a 144-megapixel
    mask). Pillow resizes in two passes, rows to the new width and then columns to the new height;
    here the first pass is made whole (source height x new width, a few MB) and the second a band
    of output rows at a time, from the rows under the band (``box``). Pillow reads ``box`` as 32-bit
    floats and places output row ``i`` at ``box_top + (i + 0.5) * scale``, so the bands give the
    whole resize's bytes only where each band's top maps to a source row a float holds exactly with
    the scale unchanged: band tops are multiples of the odd part of ``height / gcd(height, source
    height)``. Where that unit is too tall, the resize is whole. ``tests/test_tasks_resize.py``
    compares bands with whole resizes.
    """
    from PIL import Image

    source = Image.fromarray(np.ascontiguousarray(array))
    in_height = array.shape[0]
    unit = height // math.gcd(height, in_height)
    while unit % 2 == 0:
        unit //= 2
    rows = unit * max(1, (1 << 22) // max(1, width * unit))  # about 4 MB of output a band
    if height * width <= BANDED_RESIZE_PIXELS or rows >= height:
        return np.asarray(source.resize((width, height), resample=resample))
    widened = source.resize((width, in_height), resample=resample)
    out = np.empty((height, width), dtype=np.uint8)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        box = (0, top * in_height / height, width, bottom * in_height / height)
        band = widened.resize((width, bottom - top), resample=resample, box=box)
        out[top:bottom] = np.frombuffer(band.tobytes(), np.uint8).reshape(bottom - top, width)
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def softmax(x: np.ndarray) -> np.ndarray:
    shifted = x.astype(np.float64) - x.max(axis=0, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=0, keepdims=True)


def activate(raw: np.ndarray, activation: str) -> np.ndarray:
    """Apply a Decode.activation ("none", "sigmoid", "softmax") over the channel axis."""
    if activation == "sigmoid":
        return sigmoid(raw)
    if activation == "softmax":
        return softmax(raw)
    if activation == "none":
        return raw.astype(np.float64)
    raise UsageError(f"unknown decode activation {activation!r}; use none, sigmoid or softmax")


class Task(ABC):
    """Base of the three tasks. Subclasses are stateless singletons (see :func:`get_task`)."""

    name: ClassVar[str] = ""
    #: dataset mask kinds (``Layout.task``) this task can be scored against
    dataset_tasks: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def decode(self, raw: np.ndarray, spec, original_hw: tuple[int, int]) -> Prediction:
        """Selected output of one image (C x h x w, float32, padding cropped) → Prediction."""

    @abstractmethod
    def mask_image(self, pred: Prediction) -> tuple[np.ndarray, list[int] | None]:
        """The array written as the mask PNG and its palette (None = grayscale)."""

    def mask_from_map(self, map: np.ndarray, spec) -> np.ndarray:
        """The mask of a probability map that did not come from :meth:`decode` (e.g. the average of
        several frames' maps): class ids by argmax for CxHxW maps, else 0/1 at the spec's threshold."""
        if map.ndim == 3:
            return map.argmax(axis=0).astype(np.uint8)
        return (map > spec.decode.threshold).astype(np.uint8)

    def alpha(self, pred: Prediction) -> np.ndarray:
        """uint8 HxW alpha channel of a cut-out (255 = keep the pixel)."""
        return (pred.mask > 0).astype(np.uint8) * 255

    def cutout(self, image: np.ndarray, pred: Prediction,
               background: tuple[int, ...] | None = None) -> np.ndarray:
        """RGBA cut-out: the original pixels with alpha from :meth:`alpha`. With ``background``
        (R, G, B[, A]) the subject is composited onto that colour instead (RGBA out)."""
        alpha = self.alpha(pred)
        if background is None:
            return np.dstack([image, alpha])
        bg = np.asarray(tuple(background) + (255,) * (4 - len(background)), dtype=np.float32)
        a = alpha[..., None].astype(np.float32) / 255.0
        rgb = image.astype(np.float32) * a + bg[:3] * (1.0 - a)
        out_alpha = alpha.astype(np.float32) + bg[3] * (1.0 - a[..., 0])
        return np.dstack([np.clip(np.rint(rgb), 0, 255), np.clip(np.rint(out_alpha), 0, 255)]).astype(np.uint8)

    @abstractmethod
    def metric(self, spec, layout) -> Any:
        """A fresh metric object (``update(pred, target)``, ``compute()``) for this task."""

    @abstractmethod
    def metric_input(self, pred: Prediction) -> np.ndarray:
        """What the metric's ``update`` takes as prediction."""

    @abstractmethod
    def target(self, layout, mask: np.ndarray) -> np.ndarray:
        """Ground truth, as read by a dataset layout, in the form the metric takes."""

    @abstractmethod
    def decode_policy(self, spec) -> str:
        """One sentence on how predictions are produced for scoring (written into eval records)."""

    #: the per-image measures :meth:`fidelity` returns, in report order
    fidelity_measures: ClassVar[tuple[FidelityMeasure, ...]] = ()
    #: name of the per-image score against ground truth :meth:`ground_truth_score` returns
    ground_truth_measure: ClassVar[FidelityMeasure | None] = None

    @abstractmethod
    def fidelity(self, ref: Prediction, out: Prediction) -> dict[str, float]:
        """Per-image measures (:attr:`fidelity_measures`) of ``out`` against the reference ``ref``."""

    @abstractmethod
    def ground_truth_score(self, pred: Prediction, gt: np.ndarray) -> float:
        """One image's task score against ground truth (foreground 0/1 or class ids)."""

    def check_dataset(self, spec, layout) -> None:
        """Raise UsageError when ``layout``'s masks cannot score this task."""
        if layout.task not in self.dataset_tasks:
            raise UsageError(f"{spec.name} is a {self.name} model; dataset {layout.name} has {layout.task} masks "
                             f"(a {self.name} model is scored on {' or '.join(self.dataset_tasks)} masks)")

    def __repr__(self) -> str:
        return f"<task {self.name}>"
