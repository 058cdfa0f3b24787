"""Semantic: one class id per pixel (1-stage wseg on VOC). Masks are palette PNGs; scored by mIoU."""

from __future__ import annotations

import numpy as np

from segdeploy.tasks.base import Prediction, Task, activate, resize_float


def voc_palette(num_colors: int = 256) -> list[int]:
    """The PASCAL VOC colour map (bit-interleaved class id), flattened RGB triples."""
    palette = []
    for index in range(num_colors):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette.extend((r, g, b))
    return palette


class SemanticTask(Task):
    name = "semantic"
    dataset_tasks = ("semantic",)

    def decode(self, raw: np.ndarray, spec, original_hw: tuple[int, int]) -> Prediction:
        # The mask is an argmax over class maps resized to the original size; it is taken a few
        # channels at a time so that a 12-megapixel photo never holds all 21 resized maps (1 GB in
        # float32, 2 GB per float64 copy). The full map is built only when asked for.
        # Activations are monotonic per pixel only for "none"; softmax/sigmoid take the full path.
        height, width = original_hw
        if spec.decode.activation != "none":
            probs = activate(resize_float(raw, height, width), spec.decode.activation).astype(np.float32)
            return Prediction(map=probs, mask=probs.argmax(axis=0).astype(np.uint8))
        best = np.full((height, width), -np.inf, dtype=np.float32)
        labels = np.zeros((height, width), dtype=np.uint8)
        for start in range(0, raw.shape[0], 4):
            chunk = resize_float(raw[start:start + 4], height, width)
            for offset, channel in enumerate(chunk):
                labels[channel > best] = start + offset  # strict: ties keep the lower id, as argmax
                np.maximum(best, channel, out=best)
        return Prediction(mask=labels, lazy_map=lambda: resize_float(raw, height, width))

    def decode_policy(self, spec) -> str:
        return "class probabilities resized to the GT size, argmax; label 255 ignored"

    def mask_image(self, pred: Prediction) -> tuple[np.ndarray, list[int] | None]:
        return pred.mask, voc_palette()

    def alpha(self, pred: Prediction) -> np.ndarray:
        return (pred.mask > 0).astype(np.uint8) * 255  # everything but background (class 0)

    def metric(self, spec, layout):
        from segdeploy.tasks.metrics.confusion import ConfusionMatrix

        return ConfusionMatrix(num_classes=spec.num_classes, ignore_index=layout.ignore_index)

    def metric_input(self, pred: Prediction) -> np.ndarray:
        return pred.mask

    def target(self, layout, mask: np.ndarray) -> np.ndarray:
        return mask
