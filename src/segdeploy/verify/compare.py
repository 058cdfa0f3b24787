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

:func:`compare` plans (:mod:`segdeploy.verify.compare_plan`: the options, inputs and rows, and every
usage error), then runs the reference and each candidate, then judges each row.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from segdeploy.core.errors import UsageError
from segdeploy.engine.gate import default_gate, judge, with_overrides
from segdeploy.engine.fidelity import checked_outputs, image_measures
from segdeploy.verify.compare_plan import CompareOptions, ComparePlan, Subject, plan_compare
from segdeploy.verify.inputs import CompareInput
from segdeploy.verify.reference import Reference, ReferenceImage, preprocessing_fingerprint
from segdeploy.verify.report import CompareReport, CompareRow, write_report

__all__ = ["compare", "CompareOptions", "artifact_digest", "write_report", "CompareReport", "CompareRow",
           "PRECISION_ORDER"]

PRECISION_ORDER = ("fp32", "tf32", "fp16", "bf16", "int8")

#: an opened candidate: (backend or label, precision, runtime, notes of its row)
Candidate = tuple[str, str, Any, list[str]]


def _stream(inputs: list[CompareInput], runtime, spec, batch_size: int, workers: int | None):
    """(input, outcome) in input order through the shared pipeline, raw outputs kept."""
    from segdeploy.engine.pipeline import StreamOptions, stream_predictions

    outcomes = stream_predictions(inputs, lambda item: item.image, runtime, spec,
                                  options=StreamOptions(batch_size=batch_size, workers=workers, keep_outputs=True))
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
    options: CompareOptions | None = None,
    *,
    images=None,
    samples: Iterable | None = None,
    runtimes: Sequence[Any] = (),
    progress=None,
) -> CompareReport:
    """Run ``model`` on every backend x precision and judge it against PyTorch fp32.

    Args:
        model: registry name, ModelSpec, or a module from :func:`segdeploy.create_model`.
        weights: checkpoint path or "random" (ignored for a module).
        options: what to compare and how (:class:`CompareOptions`; default: every backend that runs
            a file, fp32, on the CPU).
        images: folder, image paths, HxWx3 uint8 arrays (named "array<i>" in reports), or (name, array) pairs.
        samples: dataset samples with ``id``, ``image`` and ``mask`` (ground truth) attributes.
        runtimes: already opened candidates (rows labelled ``given<i>:<name>`` and their precision;
            each preprocesses with its own ``spec``): fault injection and custom runtimes.
        progress: called with a message before each long step.

    Raises:
        UsageError: bad arguments, too few images, a reference that does not fit.
        TypeError: ``options`` is not a :class:`CompareOptions`.
    """
    if options is None:
        options = CompareOptions()
    elif not isinstance(options, CompareOptions):
        raise TypeError(f"compare() takes its options as a CompareOptions, not {type(options).__name__}")
    say = progress or (lambda message: None)
    plan = plan_compare(model, weights, options, images=images, samples=samples)
    ref_by_id, ref_label = _reference(plan, options, say)
    candidates, rows = _open_candidates(plan, options, say)
    given = _given(runtimes)
    for candidate in candidates + given:
        rows[(candidate[0], candidate[1])] = _run_row(plan, options, candidate, ref_by_id, say)
    order = plan.combos + [(label, precision) for label, precision, _, _ in given]
    return _report(plan, options, [rows[c] for c in order], ref_label)


def _given(runtimes: Sequence[Any]) -> list[Candidate]:
    """The already opened runtimes as candidates, labelled ``given<i>:<name>`` unless they carry a label."""
    return [(getattr(runtime, "label", None) or f"given{index}:{runtime.name}", runtime.precision, runtime,
             ["given as an opened runtime"]) for index, runtime in enumerate(runtimes)]


def _run_row(plan: ComparePlan, options: CompareOptions, candidate: Candidate, ref_by_id, say) -> CompareRow:
    """The row of one opened candidate: its inputs run and judged with the gate of its precision."""
    backend, precision, runtime, row_notes = candidate
    gate = with_overrides(default_gate(plan.subject.spec.task, precision),
                          _overrides_for(options.tolerances, precision))
    row_inputs = plan.split.inputs_for(backend, precision, plan.inputs)
    say(f"running {backend} {precision} on {len(row_inputs)} images")
    start = time.perf_counter()
    results, error = _measure(plan.subject, runtime, row_inputs, ref_by_id, gate, (options.batch_size, options.workers))
    seconds = time.perf_counter() - start
    row = CompareRow(backend, precision, options.device, "error", reason=error or "", gate=gate,
                     runtime=_describe(runtime), seconds=seconds, notes=tuple(row_notes))
    return row if error is not None else _judged(row, plan.subject, results, _artifact(runtime))


def _report(plan: ComparePlan, options: CompareOptions, rows: list[CompareRow], ref_label: str) -> CompareReport:
    subject, reference = plan.subject, options.reference
    return CompareReport(
        model=subject.spec.name, task=subject.spec.task,
        weights={**subject.weights_info, "state_dict_sha256": subject.weights_fp}, images=len(plan.inputs),
        reference={"label": ref_label, "file": os.fspath(reference) if reference else None,
                   "preprocessing": preprocessing_fingerprint(subject.spec)},
        rows=tuple(rows), checked_outputs=tuple(subject.names), min_images=options.min_images,
        few_images=plan.few, require_all=options.require_all, environment=_environment(), notes=tuple(plan.notes))


def _reference(plan: ComparePlan, options: CompareOptions, say):
    """({image id: (reference image, decoded prediction)}, label): loaded from ``options.reference``
    (matched by image id) or computed here; saved to ``options.save_reference`` when asked."""
    from segdeploy.engine.transforms import decode

    subject, inputs = plan.subject, plan.inputs
    reference, save_reference = options.reference, options.save_reference
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
        ref_images = _compute_reference(subject.module, spec, inputs, max(1, int(options.batch_size)),
                                        options.workers)
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


def _open_candidates(plan: ComparePlan, options: CompareOptions,
                     say) -> tuple[list[Candidate], dict[tuple[str, str], CompareRow]]:
    """([(backend, precision, runtime, notes)], {(backend, precision): row of what could not open})."""
    from segdeploy.backends import ArtifactOptions, RuntimeUnavailable, open_runtime

    device = options.device
    # a squashed input size is the size the exported files are made at
    export_options = {"input_size": tuple(plan.subject.spec.input_size)} if options.input_size is not None else None
    candidates: list[Candidate] = []
    rows: dict[tuple[str, str], CompareRow] = {}
    for backend, precision in plan.combos:
        say(f"opening {backend} {precision} on {device}")
        path, calib_src, row_notes = _files_for(plan, options, backend, precision)
        try:
            runtime = open_runtime(plan.subject.module, backend=backend, device=device, precision=precision,
                                   onnx_path=path, seed=options.seed, spec=plan.subject.spec,
                                   artifact=ArtifactOptions(export_options, calib_src, options.num_calib),
                                   **dict((options.runtime_options or {}).get(backend, {})))
            candidates.append((backend, precision, runtime, row_notes))
        except RuntimeUnavailable as exc:
            rows[(backend, precision)] = CompareRow(backend, precision, device, "unavailable", reason=str(exc))
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001 - a combination that cannot even open is an error row
            rows[(backend, precision)] = CompareRow(backend, precision, device, "error",
                                                    reason=f"could not open: {type(exc).__name__}: {exc}")
    return candidates, rows


def _files_for(plan: ComparePlan, options: CompareOptions, backend: str, precision: str):
    """(model file, calibration images, row notes) of one row; no file for a backend that runs the module."""
    from segdeploy.backends import consumes

    if consumes(backend) == "module":
        return None, None, []
    if precision != "int8":
        return options.onnx_path, None, []
    # one quantized model per backend: OpenVINO may run an NNCF IR, ORT a QDQ ONNX
    int8_onnx = options.int8_onnx
    path = int8_onnx.get(backend) if isinstance(int8_onnx, Mapping) else int8_onnx
    if path is not None:
        return path, None, []
    split_note = plan.split.note(len(plan.inputs))
    return None, plan.split.calib if plan.split.on else options.calib, [split_note] if split_note else []


def _measure(subject: Subject, runtime, inputs, ref_by_id, gate,
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


def _judged(row: CompareRow, subject: Subject, results: list[dict[str, Any]], artifact) -> CompareRow:
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


def _overrides_for(tolerances: Mapping[str, Any] | None, precision: str) -> dict[str, float] | None:
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
