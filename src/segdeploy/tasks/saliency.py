"""Saliency: one 0..1 map per image (U²-Net). Masks are the 8-bit map; scored by the SOD metric set."""

from __future__ import annotations

import numpy as np

from segdeploy.tasks.base import FidelityMeasure, Prediction, Task, mask_iou, resize_float, resize_u8_pil


class SaliencyTask(Task):
    name = "saliency"
    dataset_tasks = ("saliency", "binary")
    fidelity_measures = (
        FidelityMeasure("map_mae", False, "mean |map - reference map| over the image's pixels (0..1 scale); "
                        "bounds the change of MAE against any ground truth"),
        FidelityMeasure("map_max_error", False, "largest |map - reference map| of a pixel"),
        FidelityMeasure("mask_iou", True, "IoU of the maps thresholded at 0.5 (unions under 1 % floored)"),
    )
    ground_truth_measure = FidelityMeasure("gt_mae", False, "MAE of the map against the ground truth (> 128)")

    def fidelity(self, ref: Prediction, out: Prediction) -> dict[str, float]:
        diff = np.abs(out.map.astype(np.float64) - ref.map.astype(np.float64))
        return {"map_mae": float(diff.mean()), "map_max_error": float(diff.max()),
                "mask_iou": mask_iou(ref.map >= 0.5, out.map >= 0.5)}

    def ground_truth_score(self, pred: Prediction, gt: np.ndarray) -> float:
        fg = (gt > 128) if gt.max() > 1 else gt > 0
        return float(np.abs(pred.map.astype(np.float64) - fg).mean())

    def decode(self, raw: np.ndarray, spec, original_hw: tuple[int, int]) -> Prediction:
        dec = spec.decode
        height, width = original_hw
        pred = raw[0].astype(np.float64)
        if dec.normalize == "minmax":  # u2net_test.py normPRED
            lo, hi = pred.min(), pred.max()
            pred = (pred - lo) / (hi - lo) if hi > lo else np.zeros_like(pred)
        if dec.resize_library == "pil":
            from PIL import Image

            # u2net_test.py save_output: Image.fromarray(pred*255).convert('RGB') truncates to 8 bits,
            # then resizes to the original (W, H) with BILINEAR.
            u8 = np.clip(pred * 255.0, 0, 255).astype(np.uint8)
            mask = resize_u8_pil(u8, width, height, Image.Resampling.BILINEAR)
            return Prediction(mask=mask, lazy_map=lambda: mask.astype(np.float32) / np.float32(255.0))
        prob = np.clip(resize_float(pred[None].astype(np.float32), height, width)[0], 0.0, 1.0)
        return Prediction(map=prob, mask=np.round(prob * 255).astype(np.uint8))

    def decode_policy(self, spec) -> str:
        return "fused map, per-image min-max, 8-bit, PIL bilinear to the GT size; GT foreground > 128"

    def mask_image(self, pred: Prediction) -> tuple[np.ndarray, list[int] | None]:
        return pred.mask, None

    def mask_from_map(self, map: np.ndarray, spec) -> np.ndarray:
        return np.round(np.clip(map, 0.0, 1.0) * 255).astype(np.uint8)  # the 8-bit map, as decode gives it

    def alpha(self, pred: Prediction) -> np.ndarray:
        return pred.mask  # the saliency map is the soft alpha matte

    def metric(self, spec, layout):
        from segdeploy.tasks.metrics.saliency import SaliencyMetrics

        return SaliencyMetrics()

    def metric_input(self, pred: Prediction) -> np.ndarray:
        return pred.mask

    def target(self, layout, mask: np.ndarray) -> np.ndarray:
        return mask if layout.mask_encoding == "gray" else (layout.foreground(mask) * 255).astype(np.uint8)
