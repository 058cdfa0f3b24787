"""Semantic: one class id per pixel (1-stage wseg on VOC). Masks are palette PNGs; scored by mIoU."""

from __future__ import annotations

import numpy as np

from segdeploy.tasks.base import FidelityMeasure, Prediction, Task, activate, resize_float


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
    fidelity_measures = (
        FidelityMeasure("pixel_agreement", True, "share of pixels given the reference's class"),
        FidelityMeasure("score_mae", False, "mean |class probability - reference's| over classes and pixels"),
    )
    ground_truth_measure = FidelityMeasure("gt_pixel_accuracy", True,
                                           "pixel accuracy against the ground truth (labels < 255)")

    def fidelity(self, ref: Prediction, out: Prediction) -> dict[str, float]:
        same = np.count_nonzero(ref.mask == out.mask) / ref.mask.size
        score = float(np.abs(out.map.astype(np.float64) - ref.map.astype(np.float64)).mean())
        return {"pixel_agreement": float(same), "score_mae": score}

    def ground_truth_score(self, pred: Prediction, gt: np.ndarray) -> float:
        valid = gt < pred.map.shape[0]
        total = np.count_nonzero(valid)
        return float(np.count_nonzero((pred.mask == gt) & valid)) / total if total else 1.0

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
