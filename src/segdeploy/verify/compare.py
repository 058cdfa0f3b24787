"""Fidelity of a runtime / precision against the PyTorch fp32 reference: ``segdeploy compare``.

The reference is the PyTorch module in fp32, eager, on the CPU. Every backend x precision runs the
same preprocessed batches; for every output and every combination the report gives:

* tensor measures: max and mean absolute error, relative error ``rel = max|out - ref| / max|ref|``,
  cosine similarity over all elements, NaN / Inf counts, degenerate images (the output is constant
  over an image where the reference varies by more than 1e-3 of its magnitude), and ``min_rtol``
  = the smallest relative tolerance that would pass (= rel);
* the fp32 noise floor: the relative error of PyTorch fp32 itself against a float64 run of the same
  module on the first batch (deep networks with random weights reach 1e-4 from rounding alone);
* task measures on the decoded output (``segdeploy.engine.transforms.decode`` at the original size):
  binary: mask IoU pooled over images (intersection and union summed; a union under 1 % of the
  pixels counts as 1 %, see :class:`TaskStats`) and the worst per-image IoU;
  saliency: mean |map - reference map| (this bounds the change of MAE against any ground truth,
  |MAE(c) - MAE(r)| <= mean|c - r|) and the IoU of the maps thresholded at 0.5; semantic: the share
  of pixels given the same class. With ground-truth masks (``--dataset``) the change of the task
  metric is reported too (binary IoU, saliency MAE, semantic pixel accuracy).

Default tolerances (a row passes when every gated measure holds; NaN/Inf or a degenerate output
fails any row):

| precision | gated on | binary | saliency | semantic |
| --- | --- | --- | --- | --- |
| fp32 | every output | rel <= max(1e-4, 10 x noise floor), or max abs error <= 1e-6 | same | same |
| fp16, bf16 | decoded output | mask IoU >= 0.98 | map MAE <= 0.01 and mask IoU >= 0.95 | pixel agreement >= 0.99 (bf16: 0.98) |
| int8 | decoded output | mask IoU >= 0.95 | map MAE <= 0.02 and mask IoU >= 0.90 | pixel agreement >= 0.97 |

Why these numbers:

* fp32 computes the same function, so only rounding may differ. 1e-4 is far above fp32's 6e-8
  epsilon, yet a wrong conversion (nearest instead of bilinear resizing, a misplaced pad, a
  BatchNorm epsilon) moves outputs by 1e-3 to 1e-1. Where PyTorch's own fp32 result is further
  than 1e-5 from float64 (chaotic random-weight nets: wseg masks 7e-5), a backend summing in
  another order is allowed 10x that measured noise. An absolute error up to 1e-6 always passes:
  ONNX Runtime's sigmoid is an approximation off by ~1e-7, which reads as a relative error of 3e-3
  on a saturated side output whose values never exceed 4e-5 (random-weight U²-Netp d6).
* Reduced precisions change the numbers by design (bf16 keeps 8 significant bits), so they are
  judged by what a user sees: the mask. A mask IoU of 0.98 against the reference bounds the change
  of a dataset IoU / Dice near 0.84-0.97 (DSB2018, Carvana) to about 0.02 at worst and much less
  on average, below the gap between re-trained upstream runs; a map MAE change of 0.01 is 30 % of
  U²-Net's ECSSD MAE (0.033) at worst — the bound is loose, the measured values are far lower;
  semantic maps agree on 99 % of pixels. bf16 keeps 3 mantissa bits fewer than fp16, so argmax
  ties between near-equal class scores flip more often: 98 % (random-weight wseg, whose 21 class
  scores are nearly tied everywhere, measured 98.3-98.9 % in bf16 on PyTorch and OpenVINO).
  Thresholded saliency masks are looser (0.95) because a min-max normalised map has many pixels
  near 0.5.
* int8 is post-training quantized with a small calibration set; its gates are looser so that a
  well-calibrated model passes and a broken one (wrong scales, saturated activations) fails.

Unavailable combinations (library, provider or precision missing) are reported as "unavailable"
with the reason and do not fail the comparison, because CI machines differ in what is installed;
``require_all=True`` (``--require-all``) makes them failures. A combination that raises while
running is an "error" and fails. Without ``--int8-onnx`` / ``--calib`` an int8 row is calibrated on
the compared images themselves (said in the row's notes): optimistic, for a quick check only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from segdeploy.core.specs import ModelSpec

from segdeploy.convert.parity import tensor_errors  # noqa: F401  (re-exported)
from segdeploy.core.registry import get_spec

PRECISION_ORDER = ("fp32", "fp16", "bf16", "int8")
#: masks whose union is smaller than this share of the image are judged as if it were this large
MIN_UNION_SHARE = 0.01


# ----------------------------------------------------------------------------------------------
# Tolerances
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    """Pass/fail thresholds of one row. None = not gated (still reported).

    Attributes:
        rel: largest relative error of every output (fp32).
        noise_factor: ``rel`` may also reach this multiple of PyTorch's fp32-vs-float64 error.
        atol: an output whose max absolute error is at most this passes the ``rel`` gate anyway.
        mask_iou: smallest pooled IoU of decoded masks (binary; saliency thresholded at 0.5).
        map_mae: largest mean |map - reference map| (saliency).
        pixel_agreement: smallest share of pixels with the reference's class (semantic).
    """

    rel: float | None = None
    noise_factor: float | None = None
    atol: float | None = None
    mask_iou: float | None = None
    map_mae: float | None = None
    pixel_agreement: float | None = None


_FP32 = Tolerance(rel=1e-4, noise_factor=10.0, atol=1e-6)
DEFAULT_TOLERANCES: dict[tuple[str, str], Tolerance] = {}
for _task in ("binary", "saliency", "semantic"):
    DEFAULT_TOLERANCES[(_task, "fp32")] = _FP32
for _precision in ("fp16", "bf16"):
    DEFAULT_TOLERANCES[("binary", _precision)] = Tolerance(mask_iou=0.98)
    DEFAULT_TOLERANCES[("saliency", _precision)] = Tolerance(map_mae=0.01, mask_iou=0.95)
    DEFAULT_TOLERANCES[("semantic", _precision)] = Tolerance(pixel_agreement=0.99 if _precision == "fp16" else 0.98)
DEFAULT_TOLERANCES[("binary", "int8")] = Tolerance(mask_iou=0.95)
DEFAULT_TOLERANCES[("saliency", "int8")] = Tolerance(map_mae=0.02, mask_iou=0.90)
DEFAULT_TOLERANCES[("semantic", "int8")] = Tolerance(pixel_agreement=0.97)


def tolerance_for(task: str, precision: str, overrides: dict[str, Any] | None = None) -> Tolerance:
    """Default tolerance of (task, precision) with ``overrides`` applied.

    ``overrides`` is either flat ({"mask_iou": 0.99}) for every precision, or per precision
    ({"bf16": {"mask_iou": 0.99}, "fp32": {"rel": 1e-5}}).
    """
    tol = DEFAULT_TOLERANCES[(task, precision)]
    if not overrides:
        return tol
    names = {f.name for f in dataclasses.fields(Tolerance)}
    if set(overrides) & set(PRECISION_ORDER):
        overrides = overrides.get(precision) or {}
    unknown = set(overrides) - names
    if unknown:
        raise ValueError(f"unknown tolerance(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(names))}")
    return dataclasses.replace(tol, **overrides)


# ----------------------------------------------------------------------------------------------
# Tensor measures
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputStats:
    """Agreement of one output of one row with the reference, over every compared image."""

    name: str
    max_abs: float
    mean_abs: float
    max_ref: float
    rel: float
    cosine: float
    nan: int
    inf: int
    degenerate_images: int
    reference_degenerate_images: int
    noise_floor: float | None
    min_rtol: float


class _OutputAccumulator:
    """Streaming error statistics of one output (float64 sums)."""

    def __init__(self, name: str):
        self.name = name
        self.max_abs = 0.0
        self.sum_abs = 0.0
        self.count = 0
        self.max_ref = 0.0
        self.dot = self.ref_sq = self.out_sq = 0.0
        self.nan = self.inf = 0
        self.degenerate = self.ref_degenerate = 0

    def update(self, ref: np.ndarray, out: np.ndarray) -> None:
        if ref.shape != out.shape:
            raise ValueError(f"output {self.name!r}: shape {out.shape} differs from the reference's {ref.shape}")
        ref64 = ref.astype(np.float64, copy=False)
        out64 = out.astype(np.float64, copy=False)
        nan = np.isnan(out64)
        inf = np.isinf(out64)
        self.nan += int(nan.sum())
        self.inf += int(inf.sum())
        finite = ~(nan | inf)
        diff = np.abs(np.where(finite, out64, 0.0) - ref64)
        if (~finite).any():
            diff = np.where(finite, diff, np.inf)
        self.max_abs = max(self.max_abs, float(diff.max()) if diff.size else 0.0)
        self.sum_abs += float(np.where(finite, diff, 0.0).sum())
        self.count += int(diff.size)
        self.max_ref = max(self.max_ref, float(np.abs(ref64).max()) if ref64.size else 0.0)
        clean = np.where(finite, out64, 0.0)
        self.dot += float((clean * ref64).sum())
        self.ref_sq += float((ref64 * ref64).sum())
        self.out_sq += float((clean * clean).sum())
        # Degenerate: constant over one image (batch element) where the reference clearly varies
        # (its range exceeds 1e-3 of its magnitude, so that a saturated sigmoid that is flat up to
        # rounding in the reference does not count).
        if ref.ndim >= 2:
            flat_ref = ref64.reshape(ref.shape[0], -1)
            flat_out = out64.reshape(out.shape[0], -1)
            ref_range = np.ptp(flat_ref, axis=1)
            ref_varies = ref_range > 1e-3 * np.abs(flat_ref).max(axis=1)
            out_const = np.ptp(np.where(np.isfinite(flat_out), flat_out, 0.0), axis=1) == 0
            self.ref_degenerate += int((ref_range == 0).sum())
            self.degenerate += int((out_const & ref_varies).sum())

    def result(self, noise: float | None) -> OutputStats:
        if self.max_ref > 0:
            rel = self.max_abs / self.max_ref
        else:
            rel = 0.0 if self.max_abs == 0 else math.inf
        denom = math.sqrt(self.ref_sq * self.out_sq)
        cosine = self.dot / denom if denom > 0 else (1.0 if self.ref_sq == self.out_sq else 0.0)
        return OutputStats(
            name=self.name, max_abs=self.max_abs, mean_abs=self.sum_abs / max(self.count, 1), max_ref=self.max_ref,
            rel=rel, cosine=cosine, nan=self.nan, inf=self.inf, degenerate_images=self.degenerate,
            reference_degenerate_images=self.ref_degenerate, noise_floor=noise, min_rtol=rel)


# ----------------------------------------------------------------------------------------------
# Task measures
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskStats:
    """Agreement of the decoded masks / maps with the reference's, over every compared image.

    ``mask_iou`` = 1 - |A xor B| / max(|A or B|, 1 % of the pixels), pooled over images: the IoU,
    except that a mask covering under 1 % of an image is judged as if its union covered 1 % (one
    flipped pixel of a 2-pixel mask would otherwise read as IoU 0.5). ``mask_iou_raw`` is the plain
    pooled IoU, ``mask_iou_min`` the worst image (floored the same way).

    ``gt_*``: the task metric of reference and candidate against ground truth, when masks were given
    (binary: IoU pooled; saliency: MAE; semantic: pixel accuracy over labels < num_classes).
    """

    output: str
    images: int
    mask_iou: float | None = None
    mask_iou_raw: float | None = None
    mask_iou_min: float | None = None
    pixel_agreement: float | None = None
    map_mae: float | None = None
    map_max_abs: float | None = None
    gt_metric: str | None = None
    gt_reference: float | None = None
    gt_candidate: float | None = None


class _TaskAccumulator:
    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.images = 0
        self.inter = self.union = 0
        self.floored_union = 0.0
        self.iou_min = 1.0
        self.agree = self.pixels = 0
        self.map_abs = 0.0
        self.map_count = 0
        self.map_max = 0.0
        self.gt_ref = [0.0, 0.0]  # numerator, denominator
        self.gt_out = [0.0, 0.0]

    def _fg(self, pred) -> np.ndarray:
        if self.spec.task == "saliency":
            return pred.map >= 0.5
        return pred.mask.astype(bool)

    def update(self, ref, out, gt: np.ndarray | None) -> None:
        self.images += 1
        task = self.spec.task
        if task in ("binary", "saliency"):
            a, b = self._fg(ref), self._fg(out)
            inter, union = int((a & b).sum()), int((a | b).sum())
            floor = MIN_UNION_SHARE * a.size
            self.inter += inter
            self.union += union
            self.floored_union += max(union, floor)
            self.iou_min = min(self.iou_min, 1.0 - (union - inter) / max(union, floor, 1))
            diff = np.abs(out.map.astype(np.float64) - ref.map.astype(np.float64))
            self.map_abs += float(diff.sum())
            self.map_count += diff.size
            self.map_max = max(self.map_max, float(diff.max()))
        if task != "saliency":  # a saliency "mask" is the 0..255 map: agreement is not meaningful there
            same = ref.mask == out.mask
            self.agree += int(same.sum())
            self.pixels += same.size
        if gt is not None:
            self._gt(self.gt_ref, ref, gt)
            self._gt(self.gt_out, out, gt)

    def _gt(self, acc: list[float], pred, gt: np.ndarray) -> None:
        task = self.spec.task
        if task == "binary":
            p, g = pred.mask.astype(bool), gt > 0
            acc[0] += float((p & g).sum())
            acc[1] += float((p | g).sum())
        elif task == "saliency":
            g = (gt > 128).astype(np.float64) if gt.max() > 1 else gt.astype(np.float64)
            acc[0] += float(np.abs(pred.map.astype(np.float64) - g).mean())
            acc[1] += 1.0
        else:
            valid = gt < self.spec.num_classes
            acc[0] += float(((pred.mask == gt) & valid).sum())
            acc[1] += float(valid.sum())

    def result(self, output: str) -> TaskStats:
        task = self.spec.task
        gt_name = {"binary": "IoU vs ground truth (pooled)", "saliency": "MAE vs ground truth",
                   "semantic": "pixel accuracy vs ground truth"}[task]
        has_gt = self.gt_ref[1] > 0
        stats = TaskStats(output=output, images=self.images,
                          pixel_agreement=self.agree / self.pixels if self.pixels else None,
                          gt_metric=gt_name if has_gt else None,
                          gt_reference=self.gt_ref[0] / self.gt_ref[1] if has_gt else None,
                          gt_candidate=self.gt_out[0] / self.gt_out[1] if has_gt else None)
        if task in ("binary", "saliency"):
            floored = 1.0 - (self.union - self.inter) / self.floored_union if self.floored_union else 1.0
            stats = dataclasses.replace(stats, mask_iou=floored,
                                        mask_iou_raw=self.inter / self.union if self.union else 1.0,
                                        mask_iou_min=self.iou_min, map_mae=self.map_abs / max(self.map_count, 1),
                                        map_max_abs=self.map_max)
        return stats


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompareRow:
    """One backend x precision against the reference.

    status: "pass", "fail", "unavailable" (reason says why; not a failure unless require_all) or
    "error" (raised while running; a failure). ``failures`` name the output and the measure.
    """

    backend: str
    precision: str
    device: str
    status: str
    reason: str = ""
    failures: tuple[str, ...] = ()
    outputs: tuple[OutputStats, ...] = ()
    task: TaskStats | None = None
    tolerance: Tolerance | None = None
    runtime: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    notes: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return self.status in ("fail", "error")


@dataclass(frozen=True)
class CompareReport:
    model: str
    task: str
    weights: dict[str, Any]
    images: int
    input_shapes: tuple[tuple[int, ...], ...]
    reference: dict[str, Any]
    rows: tuple[CompareRow, ...]
    require_all: bool = False
    environment: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not any(r.failed or (self.require_all and r.status == "unavailable") for r in self.rows)

    def row(self, backend: str, precision: str) -> CompareRow:
        for r in self.rows:
            if r.backend == backend and r.precision == precision:
                return r
        raise KeyError(f"no row {backend} {precision}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return _finite(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self):
        """A rich Table of the rows (failures and reasons are listed by :meth:`render` below it)."""
        from rich.table import Table

        task_cols = {"binary": ("mask IoU", "min IoU"), "saliency": ("map MAE", "mask IoU"),
                     "semantic": ("pixel agree",)}[self.task]
        table = Table(title=f"{self.model}: fidelity vs PyTorch fp32 eager CPU ({self.images} inputs)")
        for col in ("backend", "prec", "status"):
            table.add_column(col, no_wrap=True)
        for col in ("max rel err", "min cos", "NaN/Inf", *task_cols):
            table.add_column(col, justify="right", no_wrap=True)
        colours = {"pass": "green", "fail": "red", "error": "red", "unavailable": "yellow"}
        for r in self.rows:
            status = f"[{colours[r.status]}]{r.status}[/]"
            if not r.outputs:
                table.add_row(r.backend, r.precision, status, *[""] * (3 + len(task_cols)))
                continue
            t = r.task
            cells = []
            for col in task_cols:
                value = {"mask IoU": t.mask_iou, "min IoU": t.mask_iou_min, "map MAE": t.map_mae,
                         "pixel agree": t.pixel_agreement}[col] if t else None
                cells.append("" if value is None else f"{value:.4f}")
            table.add_row(r.backend, r.precision, status, f"{max(o.rel for o in r.outputs):.2e}",
                          f"{min(o.cosine for o in r.outputs):.5f}", str(sum(o.nan + o.inf for o in r.outputs)),
                          *cells)
        return table

    def render(self, console=None) -> None:
        from rich.console import Console

        console = console or Console()
        console.print(self.table())
        for r in self.rows:
            for line in list(r.failures) + ([r.reason] if r.reason else []) + list(r.notes):
                colour = "red" if r.failed else "yellow" if r.status == "unavailable" else "dim"
                console.print(f"[{colour}]{r.backend} {r.precision}:[/] {line}", highlight=False)
        if not self.passed:
            verdict = "[red]FAIL[/]"
        elif not any(r.outputs for r in self.rows):
            verdict = "[yellow]NOTHING COMPARED[/]"
        else:
            verdict = "[green]PASS[/]"
        console.print(f"{verdict}: {sum(r.status == 'pass' for r in self.rows)} pass, "
                      f"{sum(r.failed for r in self.rows)} fail, "
                      f"{sum(r.status == 'unavailable' for r in self.rows)} unavailable"
                      + (" (counted as failures: --require-all)" if self.require_all else ""))


def _finite(obj):
    """JSON has no inf/nan: write them as strings."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


@dataclass
class _Item:
    id: str
    chw: np.ndarray
    original_hw: tuple[int, int]
    valid_hw: tuple[int, int] | None
    image: np.ndarray | None = None
    gt: np.ndarray | None = None


def _items_from_images(images, spec: ModelSpec, limit: int | None) -> list[_Item]:
    from segdeploy.engine.images import find_images, read_image
    from segdeploy.engine.transforms import preprocess_with_valid

    if isinstance(images, (str, os.PathLike, np.ndarray)):
        images = [images]
    entries: list = []
    for entry in images:
        if isinstance(entry, np.ndarray):
            entries.append(entry)
        else:
            found = [path for path, _ in find_images([entry])]
            if not found:
                raise ValueError(f"{entry}: no images found")
            entries.extend(found)
    items: list[_Item] = []
    for index, entry in enumerate(entries):
        if limit is not None and len(items) >= limit:
            break
        if isinstance(entry, np.ndarray):
            image, name = entry, f"array{index}"
        else:
            image, name = read_image(entry), str(entry)
        chw, valid = preprocess_with_valid(image, spec)
        items.append(_Item(name, chw, tuple(image.shape[:2]), valid, image=image))
    return items


def _items_from_arrays(arrays, limit: int | None) -> list[_Item]:
    arrays = np.asarray(arrays, dtype=np.float32) if not isinstance(arrays, list) else arrays
    items = []
    for index, chw in enumerate(arrays):
        chw = np.asarray(chw, dtype=np.float32)
        if chw.ndim != 3 or chw.shape[0] != 3:
            raise ValueError(f"arrays must be 3 x H x W preprocessed inputs, item {index} has shape {chw.shape}")
        items.append(_Item(f"array{index}", chw, tuple(chw.shape[1:]), None))
        if limit is not None and len(items) >= limit:
            break
    return items


def _items_from_samples(samples, spec: ModelSpec, limit: int | None) -> list[_Item]:
    from segdeploy.engine.transforms import preprocess_with_valid

    items = []
    for sample in samples:
        if limit is not None and len(items) >= limit:
            break
        chw, valid = preprocess_with_valid(sample.image, spec)
        items.append(_Item(str(sample.id), chw, tuple(sample.image.shape[:2]), valid, image=sample.image,
                           gt=getattr(sample, "mask", None)))
    return items


def dataset_samples(layout) -> Iterable[Any]:
    """Samples of a :class:`segdeploy.data.Layout` with decoded ``image`` and ground truth ``mask``
    (foreground 0/1 for gray / binary masks, class ids for semantic ones; None when absent)."""
    from types import SimpleNamespace

    for sample in layout:
        image, mask = layout.load(sample)
        if mask is not None and layout.mask_encoding in ("gray", "binary"):
            mask = layout.foreground(mask).astype(np.uint8)
        yield SimpleNamespace(id=sample.id, image=image, mask=mask)


def _batches(items: list[_Item], batch_size: int) -> list[list[_Item]]:
    """Consecutive groups of equal input shape, at most batch_size each (order kept per shape)."""
    by_shape: dict[tuple[int, ...], list[_Item]] = {}
    for item in items:
        by_shape.setdefault(item.chw.shape, []).append(item)
    out = []
    for group in by_shape.values():
        for start in range(0, len(group), batch_size):
            out.append(group[start:start + batch_size])
    return out


# ----------------------------------------------------------------------------------------------
# Compare
# ----------------------------------------------------------------------------------------------


def _noise_floor(module, batch: np.ndarray) -> list[float]:
    """Per output: relative error of PyTorch fp32 against float64 on ``batch`` (same module)."""
    import copy

    import torch

    double = copy.deepcopy(module).double().eval()
    x = torch.from_numpy(batch)
    with torch.no_grad():
        r32 = module(x)
        r64 = double(x.double())
    r32 = list(r32) if isinstance(r32, (tuple, list)) else [r32]
    r64 = list(r64) if isinstance(r64, (tuple, list)) else [r64]
    return [tensor_errors(b.numpy(), a.float().numpy())["rel"] for a, b in zip(r32, r64)]


def _judge(tol: Tolerance, outputs: list[OutputStats], task: TaskStats) -> list[str]:
    failures = []
    for o in outputs:
        if o.nan or o.inf:
            failures.append(f"{o.name}: {o.nan} NaN and {o.inf} Inf values")
        if o.degenerate_images:
            failures.append(f"{o.name}: constant output on {o.degenerate_images} image(s) where the reference varies")
        if tol.rel is not None:
            limit = tol.rel
            if tol.noise_factor is not None and o.noise_floor is not None:
                limit = max(limit, tol.noise_factor * o.noise_floor)
            if not (o.rel <= limit or (tol.atol is not None and o.max_abs <= tol.atol)):
                failures.append(f"{o.name}: relative error {o.rel:.3g} > {limit:.3g}")
    name = task.output
    if tol.mask_iou is not None and task.mask_iou is not None and not task.mask_iou >= tol.mask_iou:
        failures.append(f"{name}: mask IoU {task.mask_iou:.4f} < {tol.mask_iou}")
    if tol.map_mae is not None and task.map_mae is not None and not task.map_mae <= tol.map_mae:
        failures.append(f"{name}: map MAE {task.map_mae:.4f} > {tol.map_mae}")
    if tol.pixel_agreement is not None and task.pixel_agreement is not None and \
            not task.pixel_agreement >= tol.pixel_agreement:
        failures.append(f"{name}: pixel agreement {task.pixel_agreement:.4f} < {tol.pixel_agreement}")
    return failures


def compare(
    model,
    weights=None,
    backends: Sequence[str] = ("onnxruntime", "openvino"),
    precisions: Sequence[str] = ("fp32",),
    images=None,
    *,
    arrays=None,
    samples: Iterable | None = None,
    tolerances: dict[str, Any] | None = None,
    device: str = "cpu",
    batch_size: int = 2,
    input_size: tuple[int, int] | None = None,
    max_images: int | None = None,
    seed: int = 0,
    onnx_path: str | os.PathLike | None = None,
    int8_onnx: str | os.PathLike | None = None,
    calib=None,
    num_calib: int | None = None,
    require_all: bool = False,
    noise_floor: bool = True,
    runtime_options: dict[str, dict[str, Any]] | None = None,
    combos: Sequence[tuple[str, str]] | None = None,
    progress=None,
) -> CompareReport:
    """Run ``model`` on every backend x precision and measure agreement with PyTorch fp32.

    Args:
        model: registry name, ModelSpec, or a module from :func:`segdeploy.create_model`.
        weights: checkpoint path or "random" (ignored for a module).
        backends, precisions: the grid (``combos`` gives explicit (backend, precision) pairs instead).
        images: folder, image paths, or HxWx3 uint8 arrays; preprocessed with the model's spec.
        arrays: already preprocessed 3xHxW float32 inputs (instead of images).
        samples: dataset samples with ``id``, ``image`` and ``mask`` (ground truth) attributes.
        tolerances: overrides of the default tolerances (see :func:`tolerance_for`).
        device: device of the candidates ("cpu" or "cuda"); the reference always runs on the CPU.
        batch_size: images per run call (images of equal input size are batched).
        input_size: (H, W) to squash images to instead of the spec's preprocessing size.
        max_images: use at most this many images.
        onnx_path: fp32 ONNX for onnxruntime / openvino (default: the cached export).
        int8_onnx: quantized ONNX for int8 rows; else ``calib`` images, else the compared images.
        require_all: unavailable rows fail the comparison.
        noise_floor: measure PyTorch's fp32-vs-float64 error on the first batch (fp32 gate).
        runtime_options: per backend options for open_runtime, e.g. {"openvino": {"threads": 2}}.
        progress: callable(str) for status messages.

    Returns:
        CompareReport (``passed``, rows, ``to_json()``, ``render()``).
    """
    import torch

    from segdeploy.convert.export import spec_with_input_size, resolve_module
    from segdeploy.backends import RuntimeUnavailable, open_runtime
    from segdeploy.engine.transforms import decode

    say = progress or (lambda message: None)
    module, spec, weights_info = resolve_module(model, weights, seed=seed,
                                                spec=get_spec(model) if isinstance(model, (str, ModelSpec)) else None)
    if input_size is not None:
        spec = spec_with_input_size(spec, tuple(input_size))
    sources = sum(x is not None for x in (images, arrays, samples))
    if sources != 1:
        raise ValueError("give exactly one of images=, arrays= or samples=")
    if arrays is not None:
        items = _items_from_arrays(arrays, max_images)
    elif samples is not None:
        items = _items_from_samples(samples, spec, max_images)
    else:
        items = _items_from_images(images, spec, max_images)
    if not items:
        raise ValueError("no inputs to compare")
    batches = _batches(items, max(1, int(batch_size)))
    first_hw = tuple(batches[0][0].chw.shape[1:])
    combos = list(combos) if combos is not None else [(b, p) for b in backends for p in precisions]
    from segdeploy.backends import PRECISIONS, backend_names

    for backend, precision in combos:  # a typo is a usage error, not an "error" row
        if backend not in backend_names():
            raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(backend_names())}")
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    notes: list[str] = []
    if weights_info.get("kind") == "random":
        notes.append("random weights: outputs are not meaningful masks; agreement still measures the conversion")

    # Open every candidate first, so that inputs stream through all of them batch by batch.
    opened: list[tuple[str, str, Any, list[str], float]] = []
    rows: dict[tuple[str, str], CompareRow] = {}
    export_options = {"input_size": first_hw}
    for backend, precision in combos:
        say(f"opening {backend} {precision} on {device}")
        start = time.perf_counter()
        row_notes: list[str] = []
        options = dict((runtime_options or {}).get(backend, {}))
        try:
            path = None
            calib_src = None
            if backend != "torch":
                path = int8_onnx if precision == "int8" else onnx_path
                if precision == "int8" and path is None:
                    calib_src = calib
                    if calib_src is None:
                        calib_src = [it.image if it.image is not None else it.chw for it in items]
                        row_notes.append(f"calibrated on the {len(items)} compared images (no --calib / --int8-onnx)")
            runtime = open_runtime(module, backend=backend, device=device, precision=precision, onnx_path=path,
                                   seed=seed, spec=spec, export_options=export_options, calib=calib_src,
                                   num_calib=num_calib, **options)
            opened.append((backend, precision, runtime, row_notes, time.perf_counter() - start))
        except RuntimeUnavailable as exc:
            rows[(backend, precision)] = CompareRow(backend, precision, device, "unavailable", reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - a combination that cannot even open is an error row
            rows[(backend, precision)] = CompareRow(backend, precision, device, "error",
                                                    reason=f"{type(exc).__name__}: {exc}")

    names = list(spec.output_names)
    decode_name = names[spec.decode.output_index] if len(names) > 1 else names[0]
    out_acc = {(b, p): [_OutputAccumulator(n) for n in names] for b, p, *_ in opened}
    task_acc = {(b, p): _TaskAccumulator(spec) for b, p, *_ in opened}
    elapsed = {(b, p): t for b, p, _, _, t in opened}
    errors: dict[tuple[str, str], str] = {}
    noise: list[float] | None = None
    shapes: list[tuple[int, ...]] = []
    say(f"comparing on {len(items)} inputs in {len(batches)} batches")
    for batch_items in batches:
        batch = np.stack([it.chw for it in batch_items]).astype(np.float32)
        shapes.append(tuple(batch.shape))
        with torch.no_grad():
            ref = module(torch.from_numpy(batch))
        ref = [t.detach().float().numpy() for t in (ref if isinstance(ref, (tuple, list)) else [ref])]
        if noise is None and noise_floor:
            noise = _noise_floor(module, batch)
        with np.errstate(over="ignore"):  # exp of huge logits saturates the sigmoid, as intended
            ref_decoded = [decode([r[i] for r in ref], spec, it.original_hw, it.valid_hw)
                           for i, it in enumerate(batch_items)]
        for backend, precision, runtime, _, _ in opened:
            key = (backend, precision)
            if key in errors:
                continue
            start = time.perf_counter()
            try:
                outs = runtime.run(batch)
                if len(outs) != len(names):
                    raise RuntimeError(f"returned {len(outs)} outputs, expected {len(names)}")
                for acc, r, o in zip(out_acc[key], ref, outs):
                    acc.update(r, o)
                for i, it in enumerate(batch_items):
                    # NaN/Inf are already counted above; decode what is left without overflow warnings.
                    with np.errstate(over="ignore", invalid="ignore"):
                        cand = decode([np.nan_to_num(o[i]) for o in outs], spec, it.original_hw, it.valid_hw)
                    task_acc[key].update(ref_decoded[i], cand, it.gt)
            except Exception as exc:  # noqa: BLE001 - recorded as an error row
                errors[key] = f"{type(exc).__name__}: {exc}"
            elapsed[key] += time.perf_counter() - start

    for backend, precision, runtime, row_notes, _ in opened:
        key = (backend, precision)
        describe = _describe(runtime)
        if key in errors:
            rows[key] = CompareRow(backend, precision, device, "error", reason=errors[key], runtime=describe,
                                   seconds=elapsed[key], notes=tuple(row_notes))
            continue
        tol = tolerance_for(spec.task, precision, tolerances)
        outputs = [acc.result(noise[i] if noise else None) for i, acc in enumerate(out_acc[key])]
        task = task_acc[key].result(decode_name)
        failures = _judge(tol, outputs, task)
        rows[key] = CompareRow(backend, precision, device, "fail" if failures else "pass", failures=tuple(failures),
                               outputs=tuple(outputs), task=task, tolerance=tol, runtime=describe,
                               seconds=elapsed[key], notes=tuple(row_notes))

    environment: dict[str, Any] = {}
    try:
        from segdeploy.core.environment import environment as _environment

        environment = _environment()
    except Exception:  # noqa: BLE001 - informative only
        pass
    return CompareReport(
        model=spec.name, task=spec.task, weights=weights_info, images=len(items),
        input_shapes=tuple(dict.fromkeys(shapes)),
        reference={"backend": "torch", "precision": "fp32", "device": "cpu", "mode": "eager",
                   "torch": torch.__version__, "noise_floor": dict(zip(names, noise)) if noise else None},
        rows=tuple(rows[c] for c in combos), require_all=require_all, environment=environment,
        notes=tuple(notes))


def _describe(runtime) -> dict[str, Any]:
    try:
        return dict(runtime.describe())
    except Exception as exc:  # noqa: BLE001 - a describe failure must not lose the comparison
        return {"describe_error": f"{type(exc).__name__}: {exc}"}


def write_report(report: CompareReport, path: str | os.PathLike) -> Path:
    from segdeploy.engine.writers import atomic_write_text

    return atomic_write_text(path, report.to_json())
