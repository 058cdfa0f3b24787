"""Binary: foreground / background per pixel (UNet Carvana, UNet++ DSB2018). Masks are 0/255 PNGs;
scored by Dice and IoU."""

from __future__ import annotations

import numpy as np

from segdeploy.tasks.base import FidelityMeasure, Prediction, Task, activate, mask_iou, resize_float


class BinaryTask(Task):
    name = "binary"
    dataset_tasks = ("binary", "saliency")
    fidelity_measures = (
        FidelityMeasure("mask_iou", True, "IoU of the foreground masks (unions under 1 % floored)"),
        FidelityMeasure("pixel_agreement", True, "share of pixels with the reference's label"),
    )
    ground_truth_measure = FidelityMeasure("gt_iou", True, "IoU of the mask against the ground truth")

    def fidelity(self, ref: Prediction, out: Prediction) -> dict[str, float]:
        a, b = ref.mask.astype(bool), out.mask.astype(bool)
        return {"mask_iou": mask_iou(a, b), "pixel_agreement": float(np.count_nonzero(a == b)) / a.size}

    def ground_truth_score(self, pred: Prediction, gt: np.ndarray) -> float:
        p, g = pred.mask.astype(bool), gt > 0
        union = np.count_nonzero(p | g)
        return float(np.count_nonzero(p & g)) / union if union else 1.0

    def decode(self, raw: np.ndarray, spec, original_hw: tuple[int, int]) -> Prediction:
        dec = spec.decode
        logits = resize_float(raw, *original_hw)
        if logits.shape[0] == 2 and dec.activation == "softmax":
            # Two classes: argmax is "logit 1 > logit 0" (a tie goes to class 0, as argmax does) and
            # softmax[1] is sigmoid(l1 - l0): one exp over the image instead of a full softmax,
            # which took 0.5 s of a shared core per 1918x1280 Carvana photo.
            diff = logits[0].astype(np.float64) - logits[1]
            return Prediction(map=(1.0 / (1.0 + np.exp(diff))).astype(np.float32),
                              mask=(logits[1] > logits[0]).astype(np.uint8))
        probs = activate(logits, dec.activation)
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
