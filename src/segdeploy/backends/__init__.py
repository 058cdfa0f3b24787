"""Runtimes: run a registry model on PyTorch, ONNX Runtime or OpenVINO at a chosen precision.

>>> rt = open_runtime("u2netp", backend="openvino", precision="bf16", weights="u2netp.pth")
>>> outputs = rt.run(batch)            # list of float32 arrays, spec.output_names order
>>> rt.describe()["inference_precision"]

See :mod:`segdeploy.backends.base` for the protocol and each backend module for its options.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from segdeploy.core.errors import UsageError
from segdeploy.backends.base import (
    PRECISIONS,
    ArtifactOptions,
    Runtime,
    RuntimeUnavailable,
    backend_names,
    by_preference,
    consumes,
    decode_outputs,
    file_backends,
    get_runtime_class,
    is_auto,
    module_backends,
    physical_cores,
    plugin_errors,
    register_runtime,
)


def _spec_and_module(model):
    """(spec, module or None) for a registry name, a ModelSpec or an nn.Module from create_model."""
    from segdeploy.core.specs import ModelSpec
    from segdeploy.core.registry import get_spec

    if isinstance(model, (str, ModelSpec)):
        return get_spec(model), None
    spec = getattr(model, "segdeploy_spec", None)
    if spec is None:
        raise TypeError("model must be a registry name, a ModelSpec, or a module built by segdeploy.create_model")
    return spec, model


def open_runtime(
    model,
    backend: str = "auto",
    device: str = "cpu",
    precision: str | None = None,
    weights: str | os.PathLike | None = None,
    onnx_path: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    spec=None,
    artifact: ArtifactOptions | None = None,
    **options: Any,
) -> Runtime:
    """Open ``model`` on one backend, device and precision; raise RuntimeUnavailable if it can't run.

    Args:
        model: registry name, ModelSpec, or an nn.Module from :func:`segdeploy.create_model`
            (PyTorch runs a copy of it when a setting would change it in place; ONNX backends export it).
        backend: "auto" or a registered backend (:func:`backend_names`). "auto" picks the fastest backend and
            precision whose fidelity gate passes (:func:`select_auto`); the choice and its reason are
            on ``runtime.selection``.
        device: "cpu" or "cuda" ("cuda:N").
        precision: "fp32", "fp16", "bf16" or "int8"; None = fp32 (or the auto choice).
        weights: checkpoint path or "random" (not needed with a module or with ``onnx_path``).
        onnx_path: ONNX file for onnxruntime / openvino (int8: a quantized one). Without it the model
            is exported to the cache (:func:`segdeploy.convert.export_cache.cached_export`), reusing a valid export.
        seed: seed of random weights.
        spec: a ModelSpec to use instead of the model's own (e.g. a smaller preprocessing size).
        artifact: how the file is made without ``onnx_path`` (:class:`ArtifactOptions`): the cached
            export's keywords (input_size, opset, exporter, ...) and, for int8, the calibration
            images (folder, paths or uint8 arrays) and how many to use; the quantized model (ONNX
            Runtime QDQ; for openvino an NNCF IR when nncf is installed) is cached like the export.
        **options: backend options (see the backend's module docstring).

    Raises:
        RuntimeUnavailable: the backend library, device, provider or precision is not available here.
        ValueError: bad argument (unknown backend, option, or an fp32 file for int8 ...).
    """
    selection = None
    file_info = None
    if onnx_path is not None and backend != "auto":
        _check_reads(backend, onnx_path)
    if onnx_path is not None and _file_kind(onnx_path) == ".onnx":
        from segdeploy.backends.onnx_file import check_onnx_file, inspect_onnx

        file_info = inspect_onnx(onnx_path)
        check_onnx_file(file_info, spec or _spec_and_module(model)[0])
    if backend == "auto" and file_info is not None:
        # A given file: its own precision (a quantized file is int8), on the fastest ONNX runtime here.
        from segdeploy.convert.onnx_info import is_quantized

        precision = precision or ("int8" if is_quantized(file_info.path) else "fp32")
        readers = file_backends()
        chosen = next((b for b in readers if get_runtime_class(b).is_available()), readers[0])
        selection = {"requested": "auto", "backend": chosen, "precision": precision,
                     "why": f"a given ONNX file runs on {chosen} (the fastest ONNX runtime installed), in its own "
                            f"precision ({precision})"}
        backend = chosen
        options = {**get_runtime_class(backend).auto_options(device, options.get("threads")), **options}
    elif backend == "auto":
        choice = _auto_choice(model, device, precision, weights, onnx_path, seed)
        from segdeploy.backends.auto_probe import describe_choice

        selection = describe_choice(choice)
        backend, precision = choice.backend, choice.precision
        if choice.artifact and onnx_path is None:
            onnx_path = choice.artifact  # the int8 file the probe judged
        # Options of another backend (e.g. --torch-mode when auto picked OpenVINO) do not apply.
        accepted = set(get_runtime_class(backend).option_names)
        dropped = sorted(set(options) - accepted)
        if dropped:
            selection["ignored_options"] = dropped
            options = {k: v for k, v in options.items() if k in accepted}
        # How auto runs its choice (e.g. OpenVINO streams); options the caller gave win.
        chosen_options = get_runtime_class(backend).auto_options(
            device, options.get("threads"), spec=_spec_and_module(model)[0], precision=precision)
        if chosen_options:
            selection["options"] = chosen_options
        options = {**chosen_options, **options}
    precision = precision or "fp32"
    try:
        runtime = open_configured(model, backend, device, precision, weights, onnx_path, seed=seed, spec=spec,
                                  artifact=artifact, **options)
    except Exception as exc:
        if not _auto_export_failed(exc, selection, backend, onnx_path):
            raise
        runtime, selection = _auto_after_failed_export(exc, model, device, weights, seed, spec, selection)
    runtime.selection = selection
    if file_info is not None and file_info.static_batch is not None:
        from segdeploy.backends.onnx_file import FixedBatch

        runtime = FixedBatch(runtime, file_info.static_batch)
    return runtime


def _auto_choice(model, device, precision, weights, onnx_path, seed):
    """The AutoChoice for ``open_runtime(backend="auto")``: probed (cached) when the weights are
    known and probing is on, else the conservative static choice."""
    from segdeploy.backends.auto import probing_enabled, static_choice
    from segdeploy.backends.auto_probe import choose_auto

    spec, module = _spec_and_module(model)
    no_weights = module is None and weights is None and spec.default_weights is None
    if onnx_path is not None or not probing_enabled() or no_weights:
        choice = static_choice(device, precision)
        if onnx_path is not None and consumes(choice.backend) == "module":
            raise RuntimeUnavailable(f"an ONNX file needs {' or '.join(file_backends())}; none is installed")
        return choice
    if module is None:
        from segdeploy.zoo import create_model

        module = create_model(spec, weights, seed=seed)
    return choose_auto(module, spec, device, precision, seed=seed, progress=_auto_progress)


def _auto_export_failed(exc: Exception, selection, backend: str, onnx_path) -> bool:
    """Whether ``auto``'s choice failed because the model's ONNX export failed its parity check."""
    from segdeploy.convert.export import ExportParityError

    return (isinstance(exc, ExportParityError) and selection is not None and selection.get("requested") == "auto"
            and backend != "torch" and onnx_path is None)


def _auto_after_failed_export(exc, model, device, weights, seed, spec, selection):
    """Say that the export failed its parity check, run PyTorch fp32 instead, and cache that."""
    from segdeploy.backends.auto import AutoChoice
    from segdeploy.backends.auto_probe import record_fallback

    why = (f"PyTorch fp32: the ONNX export failed its parity check against PyTorch ({str(exc).splitlines()[0]}), "
           "so no ONNX runtime is used for these weights")
    _auto_progress(f"auto: {why}")
    cached = selection.get("cache")
    if cached:
        import json

        try:
            choice = AutoChoice.from_dict(json.loads(open(cached).read()))
            choice.cache_path = cached
            record_fallback(choice, "torch", "fp32", why)
        except (OSError, ValueError, TypeError):
            pass  # the cache is a shortcut; the next run would find the same failure and say so
    runtime = open_configured(model, "torch", device, "fp32", weights, None, seed=seed, spec=spec)
    new = {**selection, "backend": "torch", "precision": "fp32", "why": why}
    new.pop("options", None)
    return runtime, new


def _auto_progress(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


def _file_kind(path) -> str:
    """The suffix a backend declares it reads (``Runtime.reads``) for ``path``; any other file is ONNX."""
    suffix = os.path.splitext(str(path))[1].lower()
    return suffix if any(suffix in get_runtime_class(n).reads for n in backend_names()) else ".onnx"


def _check_reads(backend: str, path) -> None:
    """UsageError when ``backend`` does not read a file like ``path`` (it runs the module, or reads
    other formats)."""
    cls = get_runtime_class(backend)
    suffix = _file_kind(path)
    if suffix in cls.reads:
        return
    readers = [n for n in by_preference() if suffix in get_runtime_class(n).reads]
    where = "|".join(readers) or "no installed backend"
    if cls.consumes == "module":
        raise UsageError(f"--onnx runs the file on {where}; the {backend} backend runs the PyTorch module "
                         f"(drop --onnx or choose --backend {where})")
    raise UsageError(f"a {suffix} file runs on --backend {where}, not {backend}")


def open_configured(model, backend: str, device: str, precision: str, weights=None, onnx_path=None, *, seed: int = 0,
                    spec=None, artifact: ArtifactOptions | None = None, **options) -> Runtime:
    """Open ``backend`` exactly as configured (no auto, no file checks): the module for a backend
    that runs it, else ``onnx_path`` or the file the backend's ``make_artifact`` builds (cached)."""
    cls = get_runtime_class(backend)
    base_spec, module = _spec_and_module(model)
    spec = spec or base_spec
    cls.check(device, precision, options)
    if cls.consumes == "module":
        if onnx_path is not None:
            raise ValueError(f"the {backend} backend runs the PyTorch module; onnx_path is for "
                             f"{' / '.join(file_backends())}")
        if module is None:
            from segdeploy.zoo import create_model

            module = create_model(spec, weights, seed=seed)
        elif cls.modifies_module(device, precision, options):
            module = copy.deepcopy(module)
        return cls(spec, device, precision, **options).load(module)
    path = onnx_path
    if path is None:
        # The graph does not depend on the preprocessing, so the export (and its cache entry and
        # metadata) is made from the model's own spec; ``spec`` only drives calibration and running.
        source = module if module is not None else base_spec
        calib = artifact.calib if artifact is not None else None
        packaged = _packaged_int8(base_spec, module, weights, seed) if precision == "int8" and calib is None and \
            cls.name == "openvino" else None
        # shipped for these weights and judged on held-out photos (assets/int8), else made and cached
        path = packaged or cls.make_artifact(source, weights, precision, seed=seed, spec=spec, artifact=artifact)
    return cls(spec, device, precision, **options).load(path)


def _packaged_int8(spec, module, weights, seed: int):
    """The int8 IR segdeploy ships for these weights (path as str), or None."""
    from segdeploy.backends.auto_quick import packaged_int8

    if module is not None:
        from segdeploy.backends.auto_probe import _weights_id

        weights_id = _weights_id(module)
    else:
        from segdeploy.core.errors import WeightsError
        from segdeploy.zoo.checkpoints import RANDOM, file_sha256, resolve_weights

        try:
            path = resolve_weights(spec, weights)
        except WeightsError:
            return None
        if str(path) == RANDOM or not os.path.isfile(path):
            return None
        weights_id = f"sha256:{file_sha256(path)}"
    xml = packaged_int8(spec, weights_id)
    return str(xml) if xml is not None else None


def available_backends() -> dict[str, str | None]:
    """{backend: None if importable else the reason it is not}."""
    return {name: None if get_runtime_class(name).is_available() else get_runtime_class(name).unavailable_reason()
            for name in backend_names()}


def select_auto(model=None, device: str = "cpu", precision: str | None = None, *, weights=None,
                seed: int = 0) -> tuple[str, str]:
    """The (backend, precision) ``--backend auto`` runs for ``model`` on ``device``.

    With ``weights`` (or a module from create_model) and probing on: the fastest configuration
    whose fidelity gate passes, from a cached timed probe (:mod:`segdeploy.backends.auto`).
    Otherwise the conservative static choice (:func:`segdeploy.backends.auto.static_choice`).
    """
    from segdeploy.backends.auto import static_choice

    if model is None or (weights is None and not hasattr(model, "state_dict")):
        choice = static_choice(device, precision)
    else:
        choice = _auto_choice(model, device, precision, weights, None, seed)
    return choice.backend, choice.precision


def auto_choice(model, device: str = "cpu", precision: str | None = None, *, weights=None, seed: int = 0):
    """The :class:`~segdeploy.backends.auto.AutoChoice` ``open_runtime(backend="auto")`` runs for
    ``model`` (a name with ``weights``, or a module from create_model): the one code path every
    command (predict, serve, Session, run, demo) takes, cached per machine."""
    return _auto_choice(model, device, precision, weights, None, seed)


__all__ = [
    "open_runtime",
    "ArtifactOptions",
    "auto_choice",
    "open_configured",
    "Runtime",
    "RuntimeUnavailable",
    "register_runtime",
    "get_runtime_class",
    "backend_names",
    "by_preference",
    "consumes",
    "is_auto",
    "file_backends",
    "module_backends",
    "plugin_errors",
    "available_backends",
    "select_auto",
    "physical_cores",
    "PRECISIONS",
    "decode_outputs",
]
