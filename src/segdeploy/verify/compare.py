"""Fidelity of a runtime / precision against the PyTorch fp32 reference: ``segdeploy compare``.

The reference is the PyTorch module in fp32, eager, on the CPU — computed here, or loaded from a
reference file made elsewhere (:mod:`segdeploy.verify.reference`). Reference and candidates run
through the same streaming pipeline as ``predict`` (:func:`segdeploy.engine.pipeline.stream_predictions`:
same reading, preprocessing, batching and decoding), so what is verified is what is deployed.

Per image and per candidate the task's measures (:meth:`segdeploy.tasks.base.Task.fidelity`) and
the tensor error of every checked output are taken (:mod:`segdeploy.engine.fidelity`); the gate
(:mod:`segdeploy.engine.gate`) judges them on a low quantile and on the worst image, with
thresholds written once per task x precision. At least 16 images are judged unless
``allow_few_images`` (marked in the report). An int8 row without a quantized model or calibration
images is calibrated on a quarter of the inputs and judged on the others (disjoint by default).

Rows: "pass", "fail" (gate; exit 3), "error" (the runtime raised; exit 4), "unavailable"
(library / provider / precision missing here; a failure only with ``require_all``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from segdeploy.core.errors import UsageError
from segdeploy.core.specs import ModelSpec
from segdeploy.engine.gate import MIN_IMAGES, default_gate, judge, with_overrides
from segdeploy.engine.fidelity import checked_outputs, image_measures
from segdeploy.verify.reference import (Reference, ReferenceImage, image_id, preprocessing_fingerprint,
                                        weights_fingerprint)
from segdeploy.verify.report import CompareReport, CompareRow, write_report

__all__ = ["compare", "dataset_samples", "write_report", "CompareReport", "CompareRow", "PRECISION_ORDER"]

PRECISION_ORDER = ("fp32", "tf32", "fp16", "bf16", "int8")


@dataclass
class _Input:
    name: str
    image: np.ndarray
    id: str
    gt: np.ndarray | None = None


def _inputs_from_images(images, limit: int | None) -> list[_Input]:
    from segdeploy.engine.images import find_images, read_image

    if isinstance(images, (str, os.PathLike, np.ndarray)):
        images = [images]
    entries: list = []
    for entry in images:
        if isinstance(entry, np.ndarray) or _is_named_array(entry):
            entries.append(entry)
        else:
            found = [path for path, _ in find_images([entry])]
            if not found:
                raise UsageError(f"{entry}: no images found")
            entries.extend(found)
    out = []
    for index, entry in enumerate(entries[:limit] if limit else entries):
        if _is_named_array(entry):
            name, image = str(entry[0]), entry[1]
        elif isinstance(entry, np.ndarray):
            name, image = f"array{index}", entry
        else:
            name, image = str(entry), read_image(entry)
        out.append(_Input(name, image, image_id(image)))
    return out


def _is_named_array(entry) -> bool:
    """A (name, HxWx3 array) pair: an in-memory image that reports name its own way."""
    return isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], np.ndarray)


def _inputs_from_samples(samples, limit: int | None) -> list[_Input]:
    out = []
    for sample in samples:
        if limit is not None and len(out) >= limit:
            break
        out.append(_Input(str(sample.id), sample.image, image_id(sample.image), getattr(sample, "mask", None)))
    return out


def dataset_samples(layout) -> Iterable[Any]:
    """Samples of a :class:`segdeploy.data.Layout` with decoded ``image`` and ground truth ``mask``
    (foreground 0/1 for gray / binary masks, class ids for semantic ones; None when absent)."""
    from types import SimpleNamespace

    for sample in layout:
        image, mask = layout.load(sample)
        if mask is not None and layout.mask_encoding in ("gray", "binary"):
            mask = layout.foreground(mask).astype(np.uint8)
        yield SimpleNamespace(id=sample.id, image=image, mask=mask)


def _stream(inputs: list[_Input], runtime, spec, batch_size: int, workers: int | None):
    """(input, outcome) in input order through the shared pipeline, raw outputs kept."""
    from segdeploy.engine.pipeline import stream_predictions

    outcomes = stream_predictions(inputs, lambda item: item.image, runtime, spec, batch_size=batch_size,
                                  workers=workers, keep_outputs=True)
    yield from zip(inputs, outcomes)


def _full_outputs(spec, stored: dict[str, np.ndarray]) -> list[np.ndarray | None]:
    """The output list decode() reads, from the stored (checked) outputs."""
    return [stored.get(name) for name in spec.output_names]


def _compute_reference(module, spec, inputs, batch_size, workers) -> list[ReferenceImage]:
    from segdeploy.backends import module_backends, open_runtime
    from segdeploy.core.errors import InferenceError

    names = checked_outputs(spec)
    runtime = open_runtime(module, backend=module_backends()[0], device="cpu", precision="fp32", spec=spec)
    images = []
    for item, outcome in _stream(inputs, runtime, spec, batch_size, workers):
        if not outcome.ok:
            raise InferenceError(f"the PyTorch fp32 reference failed on {item.name}: {outcome.error}")
        valid = _valid_hw(item.image, spec)
        outputs = {name: np.asarray(outcome.outputs[spec.output_names.index(name)], dtype=np.float32)
                   for name in names}
        images.append(ReferenceImage(item.id, item.name, tuple(item.image.shape[:2]), valid, outputs))
    return images


def _valid_hw(image: np.ndarray, spec) -> tuple[int, int] | None:
    from segdeploy.engine.transforms import preprocess_with_valid

    return preprocess_with_valid(image, spec)[1]


def compare(
    model,
    weights=None,
    backends: Sequence[str] | None = None,
    precisions: Sequence[str] = ("fp32",),
    images=None,
    *,
    samples: Iterable | None = None,
    tolerances: dict[str, Any] | None = None,
    device: str = "cpu",
    batch_size: int = 2,
    input_size: tuple[int, int] | None = None,
    max_images: int | None = None,
    seed: int = 0,
    onnx_path: str | os.PathLike | None = None,
    int8_onnx: str | os.PathLike | Mapping[str, str | os.PathLike] | None = None,
    calib=None,
    num_calib: int | None = None,
    require_all: bool = False,
    runtime_options: dict[str, dict[str, Any]] | None = None,
    combos: Sequence[tuple[str, str]] | None = None,
    runtimes: Sequence[Any] = (),
    reference: str | os.PathLike | None = None,
    save_reference: str | os.PathLike | None = None,
    allow_few_images: bool = False,
    min_images: int = MIN_IMAGES,
    workers: int | None = None,
    progress=None,
) -> CompareReport:
    """Run ``model`` on every backend x precision and judge it against PyTorch fp32.

    Args:
        model: registry name, ModelSpec, or a module from :func:`segdeploy.create_model`.
        weights: checkpoint path or "random" (ignored for a module).
        backends, precisions: the grid (``combos`` gives explicit (backend, precision) pairs instead);
            default backends: every registered one that runs a file (not the reference's).
        images: folder, image paths, HxWx3 uint8 arrays (named "array<i>" in reports), or (name, array) pairs.
        samples: dataset samples with ``id``, ``image`` and ``mask`` (ground truth) attributes.
        tolerances: gate overrides, flat ({"mask_iou": 0.99}) or per precision ({"bf16": {...}}),
            see :func:`segdeploy.engine.gate.with_overrides`.
        device: device of the candidates; the reference always runs on the CPU.
        input_size: (H, W) to squash images to instead of the spec's preprocessing size.
        onnx_path: fp32 ONNX for onnxruntime / openvino (default: the cached export).
        int8_onnx: quantized model for int8 rows, or {backend: model} (e.g. an NNCF IR for openvino,
            a QDQ ONNX for onnxruntime); else ``calib`` images; else a disjoint quarter of the inputs
            calibrates and the rest is judged.
        runtimes: already opened candidates (rows labelled ``given<i>:<name>`` and their precision;
            each preprocesses with its own ``spec``): fault injection and custom runtimes.
        reference: a reference file (``save_reference`` of another run) to judge against instead of
            running PyTorch here; refused when made from other weights or preprocessing.
        save_reference: write the fp32 reference of these inputs to this .npz.
        allow_few_images: judge fewer than ``min_images`` images (marked in the report).

    Raises:
        UsageError: bad arguments, too few images, a reference that does not fit.
    """
    import torch

    from segdeploy.backends import (PRECISIONS, RuntimeUnavailable, backend_names, consumes, module_backends,
                                    open_runtime)
    from segdeploy.convert.export import resolve_module, spec_with_input_size
    from segdeploy.core.registry import get_spec
    from segdeploy.engine.transforms import decode
    from segdeploy.tasks import get_task

    say = progress or (lambda message: None)
    module, spec, weights_info = resolve_module(model, weights, seed=seed,
                                                spec=get_spec(model) if isinstance(model, (str, ModelSpec)) else None)
    if input_size is not None:
        spec = spec_with_input_size(spec, tuple(input_size))
    if (images is None) == (samples is None):
        raise UsageError("give exactly one of images= or samples=")
    inputs = _inputs_from_samples(samples, max_images) if samples is not None else \
        _inputs_from_images(images, max_images)
    if not inputs:
        raise UsageError("no inputs to compare")
    if backends is None:  # every registered backend that does not run the reference's module
        backends = [b for b in backend_names() if consumes(b) != "module"]
    combos = list(combos) if combos is not None else [(b, p) for b in backends for p in precisions]
    for backend, precision in combos:  # a typo is a usage error, not an "error" row
        if backend not in backend_names():
            raise UsageError(f"unknown backend {backend!r}; choose from {', '.join(backend_names())}")
        if precision not in PRECISIONS:
            raise UsageError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    weights_fp = weights_fingerprint(module)
    names = checked_outputs(spec)
    task = get_task(spec)
    notes: list[str] = []
    if weights_info.get("kind") == "random":
        notes.append("random weights: outputs are not meaningful masks; agreement still measures the conversion")

    # -- the reference: loaded (matched by image id) or computed here ----------------------------
    if reference is not None:
        ref = Reference.load(reference)
        ref.check_matches(spec, weights_fp, reference)
        known = ref.by_id()
        missing = [item.name for item in inputs if item.id not in known]
        if missing:
            raise UsageError(f"{missing[0]}{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}: not in "
                             f"the reference {reference} (its pixels differ from every image the reference was "
                             "made from); judge on the same images")
        ref_images = [known[item.id] for item in inputs]
        ref_label = f"reference file {os.fspath(reference)} ({ref.meta.get('made_with', 'PyTorch fp32')})"
    else:
        ref_images = None
        ref_label = "PyTorch fp32, eager, CPU"

    int8_split = ([c for c in combos if c[1] == "int8" and consumes(c[0]) != "module"] and int8_onnx is None
                  and calib is None)
    judged_int8 = inputs
    if int8_split:
        k = max(1, len(inputs) // 4)
        calib = [item.image for item in inputs[-k:]]
        judged_int8 = inputs[:-k]
    smallest = min(len(inputs), len(judged_int8) if int8_split else len(inputs))
    few = smallest < min_images
    if few and not allow_few_images:
        extra = (f" (int8 without --calib/--int8-onnx is calibrated on {len(inputs) - len(judged_int8)} of the "
                 f"{len(inputs)} images and judged on the other {len(judged_int8)}: give --calib DIR)"
                 if int8_split and len(judged_int8) < min_images <= len(inputs) else "")
        raise UsageError(f"the fidelity gate judges at least {min_images} images; {smallest} given{extra}. Give "
                         f"more images, or pass --allow-few-images (allow_few_images=True) to judge fewer "
                         "(marked in the report)")
    if few:
        notes.append(f"only {smallest} images judged (fewer than {min_images}, --allow-few-images): quantiles "
                     "over so few images are close to the worst image")

    if ref_images is None:
        say(f"computing the PyTorch fp32 reference on {len(inputs)} images")
        ref_images = _compute_reference(module, spec, inputs, max(1, int(batch_size)), workers)
    if save_reference is not None:
        from segdeploy import __version__

        Reference(spec.name, weights_fp, preprocessing_fingerprint(spec), names, ref_images,
                  {"made_with": f"PyTorch {torch.__version__} fp32 eager CPU", "segdeploy": __version__,
                   "weights_file_sha256": weights_info.get("sha256")}).save(save_reference)
        say(f"wrote the reference to {save_reference}")
    with np.errstate(over="ignore", invalid="ignore"):
        ref_preds = [decode(_full_outputs(spec, r.outputs), spec, r.original_hw, r.valid_hw) for r in ref_images]
    ref_by_id = {r.id: (r, p) for r, p in zip(ref_images, ref_preds)}

    # -- candidates --------------------------------------------------------------------------------
    candidates: list[tuple[str, str, Any, list[str]]] = []  # (backend, precision, runtime | error row, notes)
    rows: dict[tuple[str, str], CompareRow] = {}
    export_options = {"input_size": tuple(spec.input_size)} if input_size is not None else None
    for backend, precision in combos:
        say(f"opening {backend} {precision} on {device}")
        row_notes: list[str] = []
        try:
            path = None
            calib_src = None
            if consumes(backend) != "module":
                path = onnx_path
                if precision == "int8":
                    # one quantized model per backend: OpenVINO may run an NNCF IR, ORT a QDQ ONNX
                    path = int8_onnx.get(backend) if isinstance(int8_onnx, Mapping) else int8_onnx
                if precision == "int8" and path is None:
                    calib_src = calib
                    if int8_split:
                        row_notes.append(f"calibrated on {len(inputs) - len(judged_int8)} of the inputs, judged on "
                                         f"the other {len(judged_int8)}")
            runtime = open_runtime(module, backend=backend, device=device, precision=precision, onnx_path=path,
                                   seed=seed, spec=spec, export_options=export_options, calib=calib_src,
                                   num_calib=num_calib, **dict((runtime_options or {}).get(backend, {})))
            candidates.append((backend, precision, runtime, row_notes))
        except RuntimeUnavailable as exc:
            rows[(backend, precision)] = CompareRow(backend, precision, device, "unavailable", reason=str(exc))
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001 - a combination that cannot even open is an error row
            rows[(backend, precision)] = CompareRow(backend, precision, device, "error",
                                                    reason=f"could not open: {type(exc).__name__}: {exc}")
    for index, runtime in enumerate(runtimes):
        label = getattr(runtime, "label", None) or f"given{index}:{runtime.name}"
        candidates.append((label, runtime.precision, runtime, ["given as an opened runtime"]))
        combos.append((label, runtime.precision))

    for backend, precision, runtime, row_notes in candidates:
        gate = with_overrides(default_gate(spec.task, precision), _overrides_for(tolerances, precision))
        row_inputs = judged_int8 if (precision == "int8" and int8_split and backend not in module_backends()) else inputs
        say(f"running {backend} {precision} on {len(row_inputs)} images")
        start = time.perf_counter()
        results: list[dict[str, Any]] = []
        error = None
        try:
            run_spec = getattr(runtime, "spec", None) or spec
            for item, outcome in _stream(row_inputs, runtime, run_spec, max(1, int(batch_size)), workers):
                if not outcome.ok:
                    error = f"{outcome.stage} failed on {item.name}: {type(outcome.error).__name__}: {outcome.error}"
                    break
                ref_image, ref_pred = ref_by_id[item.id]
                outs = {name: np.asarray(outcome.outputs[spec.output_names.index(name)]) for name in names}
                results.append(image_measures(spec, item.name, ref_image.outputs, outs, ref_pred,
                                              outcome.prediction, gate.tensor, item.gt))
        except Exception as exc:  # noqa: BLE001 - a sticky device error stops this row: an error row
            error = f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - start
        describe = _describe(runtime)
        if error is not None:
            rows[(backend, precision)] = CompareRow(backend, precision, device, "error", reason=error, gate=gate,
                                                    runtime=describe, seconds=seconds, notes=tuple(row_notes))
            continue
        failures, summary = judge(gate, results, task.fidelity_measures, names)
        if any("ground_truth" in r for r in results):
            gt = [r["ground_truth"] for r in results if "ground_truth" in r]
            summary["ground_truth"] = {"measure": task.ground_truth_measure.name,
                                       "reference": float(np.mean([g["reference"] for g in gt])),
                                       "candidate": float(np.mean([g["candidate"] for g in gt])), "images": len(gt)}
        rows[(backend, precision)] = CompareRow(
            backend, precision, device, "fail" if failures else "pass", failures=tuple(failures), gate=gate,
            summary=summary, images=tuple(results), runtime=describe, seconds=seconds, notes=tuple(row_notes))

    environment: dict[str, Any] = {}
    try:
        from segdeploy.core.environment import environment as _environment

        environment = _environment()
    except Exception:  # noqa: BLE001 - informative only
        pass
    return CompareReport(
        model=spec.name, task=spec.task, weights={**weights_info, "state_dict_sha256": weights_fp},
        images=len(inputs),
        reference={"label": ref_label, "file": os.fspath(reference) if reference else None,
                   "preprocessing": preprocessing_fingerprint(spec)},
        rows=tuple(rows[c] for c in combos), checked_outputs=tuple(names), min_images=min_images, few_images=few,
        require_all=require_all, environment=environment, notes=tuple(notes))


def _overrides_for(tolerances: dict[str, Any] | None, precision: str) -> dict[str, float] | None:
    if not tolerances:
        return None
    if set(tolerances) & set(PRECISION_ORDER):
        return tolerances.get(precision) or None
    return tolerances


def _describe(runtime) -> dict[str, Any]:
    try:
        return dict(runtime.describe())
    except Exception as exc:  # noqa: BLE001 - a describe failure must not lose the comparison
        return {"describe_error": f"{type(exc).__name__}: {exc}"}
