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
from segdeploy.verify.inputs import CompareInput, inputs_from_images, inputs_from_samples
from segdeploy.verify.reference import Reference, ReferenceImage, preprocessing_fingerprint, weights_fingerprint
from segdeploy.verify.report import CompareReport, CompareRow, write_report

__all__ = ["compare", "artifact_digest", "write_report", "CompareReport", "CompareRow", "PRECISION_ORDER"]

PRECISION_ORDER = ("fp32", "tf32", "fp16", "bf16", "int8")


def _stream(inputs: list[CompareInput], runtime, spec, batch_size: int, workers: int | None):
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
    say = progress or (lambda message: None)
    subject = _subject(model, weights, seed, input_size)
    spec = subject.spec
    if (images is None) == (samples is None):
        raise UsageError("give exactly one of images= or samples=")
    inputs = inputs_from_samples(samples, max_images) if samples is not None else \
        inputs_from_images(images, max_images)
    if not inputs:
        raise UsageError("no inputs to compare")
    combos = _grid(backends, precisions, combos)
    notes = (["random weights: outputs are not meaningful masks; agreement still measures the conversion"]
             if subject.weights_info.get("kind") == "random" else [])
    split = _int8_split(inputs, combos, int8_onnx, calib)
    few = _check_count(inputs, split, min_images, allow_few_images, notes)
    ref_by_id, ref_label = _reference(subject, inputs, reference, save_reference, (batch_size, workers), say)

    files = {"onnx_path": onnx_path, "int8_onnx": int8_onnx, "calib": split.calib if split.on else calib,
             "num_calib": num_calib, "split_note": split.note(len(inputs))}
    export_options = {"input_size": tuple(spec.input_size)} if input_size is not None else None
    candidates, rows = _open_candidates(subject, combos, device, seed, files, export_options, runtime_options, say)
    for index, runtime in enumerate(runtimes):
        label = getattr(runtime, "label", None) or f"given{index}:{runtime.name}"
        candidates.append((label, runtime.precision, runtime, ["given as an opened runtime"]))
        combos.append((label, runtime.precision))

    for backend, precision, runtime, row_notes in candidates:
        gate = with_overrides(default_gate(spec.task, precision), _overrides_for(tolerances, precision))
        row_inputs = split.inputs_for(backend, precision, inputs)
        say(f"running {backend} {precision} on {len(row_inputs)} images")
        start = time.perf_counter()
        results, error = _measure(subject, runtime, row_inputs, ref_by_id, gate, (batch_size, workers))
        seconds = time.perf_counter() - start
        row = CompareRow(backend, precision, device, "error", reason=error or "", gate=gate,
                         runtime=_describe(runtime), seconds=seconds, notes=tuple(row_notes))
        rows[(backend, precision)] = row if error is not None else _judged(row, subject, results, _artifact(runtime))

    return CompareReport(
        model=spec.name, task=spec.task, weights={**subject.weights_info, "state_dict_sha256": subject.weights_fp},
        images=len(inputs),
        reference={"label": ref_label, "file": os.fspath(reference) if reference else None,
                   "preprocessing": preprocessing_fingerprint(spec)},
        rows=tuple(rows[c] for c in combos), checked_outputs=tuple(subject.names), min_images=min_images,
        few_images=few, require_all=require_all, environment=_environment(), notes=tuple(notes))


@dataclass
class _Subject:
    """The model compared: module, spec (with the input size asked), weights and checked outputs."""

    module: Any
    spec: ModelSpec
    weights_info: dict[str, Any]
    weights_fp: str
    names: list[str]


def _subject(model, weights, seed: int, input_size) -> _Subject:
    from segdeploy.convert.export import resolve_module, spec_with_input_size
    from segdeploy.core.registry import get_spec

    module, spec, weights_info = resolve_module(model, weights, seed=seed,
                                                spec=get_spec(model) if isinstance(model, (str, ModelSpec)) else None)
    if input_size is not None:
        spec = spec_with_input_size(spec, tuple(input_size))
    return _Subject(module, spec, weights_info, weights_fingerprint(module), checked_outputs(spec))


def _grid(backends, precisions, combos) -> list[tuple[str, str]]:
    """The (backend, precision) rows; default backends: every registered one that runs a file."""
    from segdeploy.backends import PRECISIONS, backend_names, consumes

    if backends is None:
        backends = [b for b in backend_names() if consumes(b) != "module"]
    combos = list(combos) if combos is not None else [(b, p) for b in backends for p in precisions]
    for backend, precision in combos:  # a typo is a usage error, not an "error" row
        if backend not in backend_names():
            raise UsageError(f"unknown backend {backend!r}; choose from {', '.join(backend_names())}")
        if precision not in PRECISIONS:
            raise UsageError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return combos


@dataclass
class _Int8Split:
    """int8 rows without a quantized model or calibration images: a quarter of the inputs
    calibrates (``calib``) and the others are judged (``judged``)."""

    on: bool
    judged: list[CompareInput]
    calib: list[np.ndarray] | None = None

    def inputs_for(self, backend: str, precision: str, inputs: list[CompareInput]) -> list[CompareInput]:
        """The inputs a row judges (a given runtime's label counts as a file-running backend)."""
        from segdeploy.backends import module_backends

        return self.judged if self.on and precision == "int8" and backend not in module_backends() else inputs

    def note(self, total: int) -> str | None:
        if not self.on:
            return None
        return f"calibrated on {total - len(self.judged)} of the inputs, judged on the other {len(self.judged)}"


def _int8_split(inputs: list[CompareInput], combos, int8_onnx, calib) -> _Int8Split:
    from segdeploy.backends import consumes

    wanted = [c for c in combos if c[1] == "int8" and consumes(c[0]) != "module"]
    if not wanted or int8_onnx is not None or calib is not None:
        return _Int8Split(False, inputs)
    k = max(1, len(inputs) // 4)
    return _Int8Split(True, inputs[:-k], [item.image for item in inputs[-k:]])


def _check_count(inputs, split: _Int8Split, min_images: int, allow_few_images: bool, notes: list[str]) -> bool:
    """True when fewer than ``min_images`` are judged (allowed, and noted); UsageError when not allowed."""
    smallest = min(len(inputs), len(split.judged))
    if smallest >= min_images:
        return False
    if not allow_few_images:
        extra = (f" (int8 without --calib/--int8-onnx is calibrated on {len(inputs) - len(split.judged)} of the "
                 f"{len(inputs)} images and judged on the other {len(split.judged)}: give --calib DIR)"
                 if split.on and len(split.judged) < min_images <= len(inputs) else "")
        raise UsageError(f"the fidelity gate judges at least {min_images} images; {smallest} given{extra}. Give "
                         f"more images, or pass --allow-few-images (allow_few_images=True) to judge fewer "
                         "(marked in the report)")
    notes.append(f"only {smallest} images judged (fewer than {min_images}, --allow-few-images): quantiles "
                 "over so few images are close to the worst image")
    return True


def _reference(subject: _Subject, inputs, reference, save_reference, batching, say):
    """({image id: (reference image, decoded prediction)}, label): loaded from ``reference`` (matched
    by image id) or computed here; saved to ``save_reference`` when asked."""
    from segdeploy.engine.transforms import decode

    spec = subject.spec
    if reference is not None:
        ref = Reference.load(reference)
        ref.check_matches(spec, subject.weights_fp, reference)
        known = ref.by_id()
        missing = [item.name for item in inputs if item.id not in known]
        if missing:
            raise UsageError(f"{missing[0]}{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}: not in "
                             f"the reference {reference} (its pixels differ from every image the reference was "
                             "made from); judge on the same images")
        ref_images = [known[item.id] for item in inputs]
        ref_label = f"reference file {os.fspath(reference)} ({ref.meta.get('made_with', 'PyTorch fp32')})"
    else:
        say(f"computing the PyTorch fp32 reference on {len(inputs)} images")
        ref_images = _compute_reference(subject.module, spec, inputs, max(1, int(batching[0])), batching[1])
        ref_label = "PyTorch fp32, eager, CPU"
    if save_reference is not None:
        import torch

        from segdeploy import __version__

        Reference(spec.name, subject.weights_fp, preprocessing_fingerprint(spec), subject.names, ref_images,
                  {"made_with": f"PyTorch {torch.__version__} fp32 eager CPU", "segdeploy": __version__,
                   "weights_file_sha256": subject.weights_info.get("sha256")}).save(save_reference)
        say(f"wrote the reference to {save_reference}")
    with np.errstate(over="ignore", invalid="ignore"):
        preds = [decode(_full_outputs(spec, r.outputs), spec, r.original_hw, r.valid_hw) for r in ref_images]
    return {r.id: (r, p) for r, p in zip(ref_images, preds)}, ref_label


def _open_candidates(subject: _Subject, combos, device: str, seed: int, files: dict[str, Any], export_options,
                     runtime_options, say):
    """([(backend, precision, runtime, notes)], {(backend, precision): row of what could not open})."""
    from segdeploy.backends import RuntimeUnavailable, consumes, open_runtime

    candidates: list[tuple[str, str, Any, list[str]]] = []
    rows: dict[tuple[str, str], CompareRow] = {}
    for backend, precision in combos:
        say(f"opening {backend} {precision} on {device}")
        row_notes: list[str] = []
        path = calib_src = None
        if consumes(backend) != "module":
            path = files["onnx_path"]
            if precision == "int8":
                # one quantized model per backend: OpenVINO may run an NNCF IR, ORT a QDQ ONNX
                int8_onnx = files["int8_onnx"]
                path = int8_onnx.get(backend) if isinstance(int8_onnx, Mapping) else int8_onnx
            if precision == "int8" and path is None:
                calib_src = files["calib"]
                row_notes += [files["split_note"]] if files["split_note"] else []
        try:
            runtime = open_runtime(subject.module, backend=backend, device=device, precision=precision,
                                   onnx_path=path, seed=seed, spec=subject.spec, export_options=export_options,
                                   calib=calib_src, num_calib=files["num_calib"],
                                   **dict((runtime_options or {}).get(backend, {})))
            candidates.append((backend, precision, runtime, row_notes))
        except RuntimeUnavailable as exc:
            rows[(backend, precision)] = CompareRow(backend, precision, device, "unavailable", reason=str(exc))
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001 - a combination that cannot even open is an error row
            rows[(backend, precision)] = CompareRow(backend, precision, device, "error",
                                                    reason=f"could not open: {type(exc).__name__}: {exc}")
    return candidates, rows


def _measure(subject: _Subject, runtime, inputs, ref_by_id, gate,
             batching) -> tuple[list[dict[str, Any]], str | None]:
    """Per-image measures of ``runtime`` on ``inputs``, and the error that stopped it (None)."""
    spec = subject.spec
    results: list[dict[str, Any]] = []
    try:
        run_spec = getattr(runtime, "spec", None) or spec
        for item, outcome in _stream(inputs, runtime, run_spec, max(1, int(batching[0])), batching[1]):
            if not outcome.ok:
                error = outcome.error
                return results, f"{outcome.stage} failed on {item.name}: {type(error).__name__}: {error}"
            ref_image, ref_pred = ref_by_id[item.id]
            outs = {name: np.asarray(outcome.outputs[spec.output_names.index(name)]) for name in subject.names}
            results.append(image_measures(spec, item.name, ref_image.outputs, outs, ref_pred,
                                          outcome.prediction, gate.tensor, item.gt))
            results[-1]["image_id"] = item.id  # the pixels judged, so that a verdict names them
    except Exception as exc:  # noqa: BLE001 - a sticky device error stops this row: an error row
        return results, f"{type(exc).__name__}: {exc}"
    return results, None


def _judged(row: CompareRow, subject: _Subject, results: list[dict[str, Any]], artifact) -> CompareRow:
    """``row`` with the gate's verdict on ``results`` (and the ground-truth score when known)."""
    import dataclasses

    from segdeploy.tasks import get_task

    task = get_task(subject.spec)
    failures, summary = judge(row.gate, results, task.fidelity_measures, subject.names)
    if any("ground_truth" in r for r in results):
        gt = [r["ground_truth"] for r in results if "ground_truth" in r]
        summary["ground_truth"] = {"measure": task.ground_truth_measure.name,
                                   "reference": float(np.mean([g["reference"] for g in gt])),
                                   "candidate": float(np.mean([g["candidate"] for g in gt])), "images": len(gt)}
    return dataclasses.replace(row, status="fail" if failures else "pass", reason="", failures=tuple(failures),
                               summary=summary, images=tuple(results), artifact=artifact)


def _environment() -> dict[str, Any]:
    try:
        from segdeploy.core.environment import environment

        return environment()
    except Exception:  # noqa: BLE001 - informative only
        return {}


def _overrides_for(tolerances: dict[str, Any] | None, precision: str) -> dict[str, float] | None:
    if not tolerances:
        return None
    if set(tolerances) & set(PRECISION_ORDER):
        return tolerances.get(precision) or None
    return tolerances


def _artifact(runtime) -> dict[str, Any]:
    """The file a runtime runs, by name and digest (empty when it runs a module in memory)."""
    path = getattr(runtime, "onnx_path", None)
    if not path or not os.path.isfile(str(path)):
        return {}
    return {"name": os.path.basename(str(path)), "sha256": artifact_digest(path)}


def artifact_digest(path: str | os.PathLike) -> str:
    """sha256 of a model file; an OpenVINO IR's ``.xml`` is hashed with its ``.bin`` (the weights)."""
    import hashlib

    digest = hashlib.sha256()
    parts = [str(path)]
    if str(path).lower().endswith(".xml") and os.path.isfile(str(path)[:-4] + ".bin"):
        parts.append(str(path)[:-4] + ".bin")
    for part in parts:
        with open(part, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _describe(runtime) -> dict[str, Any]:
    try:
        return dict(runtime.describe())
    except Exception as exc:  # noqa: BLE001 - a describe failure must not lose the comparison
        return {"describe_error": f"{type(exc).__name__}: {exc}"}
