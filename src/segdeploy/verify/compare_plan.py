"""What a comparison will do, settled before anything runs: :class:`CompareOptions` and :func:`plan_compare`.

Planning resolves the model and its weights, reads the inputs, expands the backend x precision
grid, sets aside int8 calibration images and counts the images each row will judge. Every usage
error (unknown backend, too few images, ...) is raised here, before the PyTorch reference or any
candidate runs; :func:`segdeploy.verify.compare.compare` then runs and judges the plan.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from segdeploy.core.errors import UsageError
from segdeploy.core.specs import ModelSpec
from segdeploy.engine.fidelity import checked_outputs
from segdeploy.engine.gate import MIN_IMAGES
from segdeploy.verify.inputs import CompareInput, inputs_from_images, inputs_from_samples
from segdeploy.verify.reference import weights_fingerprint

__all__ = ["CompareOptions", "ComparePlan", "plan_compare"]


@dataclass(frozen=True, kw_only=True)
class CompareOptions:
    """How :func:`segdeploy.verify.compare.compare` compares; every field has a default, so
    ``CompareOptions(combos=[("openvino", "int8")], batch_size=4)`` names only what differs.

    Attributes:
        backends: the backends of the grid (each with every one of ``precisions``); default: every
            registered backend that runs a file, since the backends that run the module itself are
            what the reference is made with.
        precisions: the precisions of the grid.
        combos: explicit (backend, precision) rows instead of the grid, in report order (e.g.
            openvino int8 without openvino fp32).
        device: device of the candidates. The reference always runs on the CPU, so that it is the
            same on every machine and a device's own numerics show up as disagreement.
        tolerances: gate overrides, flat ({"mask_iou": 0.99}) or per precision ({"bf16": {...}}),
            see :func:`segdeploy.engine.gate.with_overrides`.
        require_all: an "unavailable" row (library / provider / precision missing here) counts as a
            failure of the report, for a machine that is meant to run every combination.
        runtime_options: each backend's own options for :func:`segdeploy.open_runtime`, e.g.
            ``{"onnxruntime": {"threads": 1}}``.
        max_images: judge only the first N inputs.
        input_size: (H, W) to squash images to instead of the spec's preprocessing size; exported
            ONNX files are then made at this size too.
        batch_size: images per run call, for the reference and every candidate.
        workers: reading / decoding threads of the pipeline (None: its default).
        seed: seed of random weights (``weights="random"``).
        min_images: the fewest images judged without ``allow_few_images``.
        allow_few_images: judge fewer than ``min_images`` images; quantiles over so few are close to
            the worst image, so the report marks it.
        onnx_path: fp32 ONNX for onnxruntime / openvino (default: the cached export).
        int8_onnx: quantized model for int8 rows, or {backend: model} (e.g. an NNCF IR for
            openvino, a QDQ ONNX for onnxruntime); the file judged is then the file deployed.
        calib: calibration images (folder, paths or arrays) for int8 rows without ``int8_onnx``;
            without either, a disjoint quarter of the inputs calibrates and the rest is judged, so
            no row is judged on the images it was calibrated on.
        num_calib: calibration images used (None: the quantizer's default).
        reference: a reference file (``save_reference`` of another run) to judge against instead
            of running PyTorch here, so that a backend can be judged on another machine; refused
            when made from other weights or preprocessing.
        save_reference: write the fp32 reference of these inputs to this .npz.
    """

    # which rows, and how each is judged
    backends: Sequence[str] | None = None
    precisions: Sequence[str] = ("fp32",)
    combos: Sequence[tuple[str, str]] | None = None
    device: str = "cpu"
    tolerances: Mapping[str, Any] | None = None
    require_all: bool = False
    runtime_options: Mapping[str, Mapping[str, Any]] | None = None
    # which images, and how they are run
    max_images: int | None = None
    input_size: tuple[int, int] | None = None
    batch_size: int = 2
    workers: int | None = None
    seed: int = 0
    min_images: int = MIN_IMAGES
    allow_few_images: bool = False
    # the model files of the candidates
    onnx_path: str | os.PathLike | None = None
    int8_onnx: str | os.PathLike | Mapping[str, str | os.PathLike] | None = None
    calib: Any = None
    num_calib: int | None = None
    # reference files
    reference: str | os.PathLike | None = None
    save_reference: str | os.PathLike | None = None


@dataclass
class Subject:
    """The model compared: module, spec (with the input size asked), weights and checked outputs."""

    module: Any
    spec: ModelSpec
    weights_info: dict[str, Any]
    weights_fp: str
    names: list[str]


@dataclass
class Int8Split:
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


@dataclass
class ComparePlan:
    """A comparison ready to run.

    Attributes:
        subject: the model compared.
        inputs: every input, in order (the reference is made on all of them).
        combos: the (backend, precision) rows to open, in report order.
        split: which inputs int8 rows calibrate on and which they judge.
        few: fewer than ``min_images`` images are judged (allowed).
        notes: the report's notes so far.
    """

    subject: Subject
    inputs: list[CompareInput]
    combos: list[tuple[str, str]]
    split: Int8Split
    few: bool
    notes: list[str]


def plan_compare(model, weights, options: CompareOptions, *, images=None,
                 samples: Iterable | None = None) -> ComparePlan:
    """The plan of :func:`segdeploy.verify.compare.compare` (whose docstring describes the arguments).

    Raises:
        UsageError: bad arguments or too few images.
    """
    subject = _subject(model, weights, options.seed, options.input_size)
    if (images is None) == (samples is None):
        raise UsageError("give exactly one of images= or samples=")
    inputs = inputs_from_samples(samples, options.max_images) if samples is not None else \
        inputs_from_images(images, options.max_images)
    if not inputs:
        raise UsageError("no inputs to compare")
    combos = _grid(options.backends, options.precisions, options.combos)
    notes = (["random weights: outputs are not meaningful masks; agreement still measures the conversion"]
             if subject.weights_info.get("kind") == "random" else [])
    split = _int8_split(inputs, combos, options.int8_onnx, options.calib)
    few = _check_count(inputs, split, options.min_images, options.allow_few_images, notes)
    return ComparePlan(subject, inputs, combos, split, few, notes)


def _subject(model, weights, seed: int, input_size) -> Subject:
    from segdeploy.convert.export import resolve_module, spec_with_input_size
    from segdeploy.core.registry import get_spec

    module, spec, weights_info = resolve_module(model, weights, seed=seed,
                                                spec=get_spec(model) if isinstance(model, (str, ModelSpec)) else None)
    if input_size is not None:
        spec = spec_with_input_size(spec, tuple(input_size))
    return Subject(module, spec, weights_info, weights_fingerprint(module), checked_outputs(spec))


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


def _int8_split(inputs: list[CompareInput], combos, int8_onnx, calib) -> Int8Split:
    from segdeploy.backends import consumes

    wanted = [c for c in combos if c[1] == "int8" and consumes(c[0]) != "module"]
    if not wanted or int8_onnx is not None or calib is not None:
        return Int8Split(False, inputs)
    k = max(1, len(inputs) // 4)
    return Int8Split(True, inputs[:-k], [item.image for item in inputs[-k:]])


def _check_count(inputs, split: Int8Split, min_images: int, allow_few_images: bool, notes: list[str]) -> bool:
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
