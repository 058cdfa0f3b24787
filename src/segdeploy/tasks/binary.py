"""Binary: foreground / background per pixel (UNet Carvana, UNet++ DSB2018). Masks are 0/255 PNGs;
scored by Dice and IoU."""

from __future__ import annotations

import numpy as np

from segdeploy.tasks.base import Prediction, Task, activate, resize_float


class BinaryTask(Task):
    name = "binary"
    dataset_tasks = ("binary", "saliency")

    def decode(self, raw: np.ndarray, spec, original_hw: tuple[int, int]) -> Prediction:
        dec = spec.decode
        probs = activate(resize_float(raw, *original_hw), dec.activation)
        if probs.shape[0] == 1:
            fg = probs[0]
            mask = fg > dec.threshold
        else:  # milesial predict.py: argmax over classes; foreground = class 1
            mask = probs.argmax(axis=0) == 1
            fg = probs[1]
        return Prediction(map=fg.astype(np.float32), mask=mask.astype(np.uint8))

    def decode_policy(self, spec) -> str:
        rule = "argmax over 2 classes" if spec.num_classes == 2 else f"sigmoid > {spec.decode.threshold}"
        return f"logits bilinearly resized (align_corners=False) to the GT size, then {rule}"

    def mask_image(self, pred: Prediction) -> tuple[np.ndarray, list[int] | None]:
        return (pred.mask > 0).astype(np.uint8) * 255, None

    def metric(self, spec, layout):
        from segdeploy.tasks.metrics.overlap import BinaryOverlap

        return BinaryOverlap(threshold=spec.decode.threshold)

    def metric_input(self, pred: Prediction) -> np.ndarray:
        return pred.mask

    def target(self, layout, mask: np.ndarray) -> np.ndarray:
        return layout.foreground(mask)
