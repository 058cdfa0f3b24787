"""The Runtime protocol: one interface over PyTorch, ONNX Runtime and OpenVINO.

A runtime takes a preprocessed NCHW float32 batch and returns every network output as float32
numpy arrays, batch axis first, in ``spec.output_names`` order, whatever precision it computes in.
Asking for a device, provider or precision that is not there raises :class:`RuntimeUnavailable`
(with the reason and what to install); a runtime never falls back silently.

Life cycle: ``cls.check(device, precision, options)`` (cheap, before anything is built) ->
``runtime = cls(spec, device, precision, **options)`` -> ``runtime.load(artifact)`` (an nn.Module
for PyTorch, an ONNX file for the others) -> ``warmup(shape)`` -> ``run(batch)`` ... ->
``describe()``. :func:`segdeploy.backends.open_runtime` does all of that.

Output selection: ``run(batch, outputs=(i, ...))`` returns only the outputs at those indices of
``spec.output_names`` (in the order asked). Decoding reads one output (``spec.decode.output_index``,
see :func:`decode_outputs`); asking for only that one spares copying the others out of the engine
(U²-Net: 6 of 7 side outputs, about 6/7 of the bytes that leave a GPU).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
import warnings
from importlib import metadata
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from segdeploy.core.specs import ModelSpec

PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8")
DEVICES = ("cpu", "cuda")


from segdeploy.core.errors import RuntimeUnavailable, UsageError  # noqa: E402  (defined in core, raised here)


@dataclass(frozen=True)
class ArtifactOptions:
    """How a backend that runs a file makes one when none is given (:meth:`Runtime.make_artifact`).

    Attributes:
        export: keyword arguments of the cached ONNX export (input_size, opset, exporter, ...).
        calib: int8 only: calibration images (a folder, paths or uint8 arrays).
        num_calib: calibration images used (None: the quantizer's default).
    """

    export: Mapping[str, Any] | None = None
    calib: Any = None
    num_calib: int | None = None


class Runtime(ABC):
    """Base class of every backend. Subclasses set ``name`` and implement the abstract methods."""

    name: ClassVar[str] = ""
    #: the Python package the backend needs (checked by :meth:`is_available`)
    library: ClassVar[str] = ""
    #: precisions this backend can be asked for at all (availability is checked in ``check``)
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    #: option names ``__init__`` accepts besides device and precision
    option_names: ClassVar[tuple[str, ...]] = ()

    # -- capabilities: what callers read instead of comparing backend names ----------------------
    #: what ``load`` takes: "module" (the PyTorch nn.Module itself), "onnx" (an ONNX file, which
    #: :meth:`make_artifact` exports or quantizes) or "artifact" (a file of its own that the backend's
    #: :meth:`make_artifact` builds)
    consumes: ClassVar[str] = "onnx"
    #: suffixes of the given files (``--onnx``) it reads; empty for a backend that runs the module
    reads: ClassVar[tuple[str, ...]] = (".onnx",)
    #: device kinds it may run on ("cpu", "cuda"); ``check`` says whether it can here
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    #: how its int8 file is made, preferred first: "nncf" (OpenVINO's quantizer) or "ort-qdq" (ONNX
    #: Runtime's QDQ quantizer); empty = no int8 file is made for it
    int8_quantizers: ClassVar[tuple[str, ...]] = ()
    #: what ``--backend auto`` probes of it, per device kind: (precision, quantizer or None) pairs
    auto_candidates: ClassVar[dict[str, tuple[tuple[str, str | None], ...]]] = {}
    #: place in the conservative choice without a probe and among runtimes for a given ONNX file
    #: (lower is tried first: the faster engine; a backend that does not say comes after the built-ins)
    preference: ClassVar[int] = 100

    #: how "--backend auto" chose this runtime (None when the backend was named)
    selection: dict[str, Any] | None = None

    #: how many ``run`` calls this runtime takes at once from different threads, and needs in
    #: flight to be busy (OpenVINO with N streams: N; everything else 1 = call it from one thread).
    #: The pipeline, the pure-inference timer and the server keep this many calls in flight.
    concurrent_calls: int = 1

    def __init__(self, spec: ModelSpec, device: str = "cpu", precision: str = "fp32", **options: Any):
        unknown = sorted(set(options) - set(self.option_names))
        if unknown:
            raise ValueError(
                f"{self.name} runtime: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(self.option_names) or 'none'}")
        self.spec = spec
        self.device = device
        self.precision = precision
        self.options = options
        self.loaded = False

    # -- availability -------------------------------------------------------------------------
    @classmethod
    def is_available(cls) -> bool:
        """True when the backend's library can be imported."""
        try:
            importlib.import_module(cls.library)
        except ImportError:
            return False
        return True

    @classmethod
    def unavailable_reason(cls) -> str:
        """Why :meth:`is_available` is False (what to install)."""
        return f"{cls.name} is not installed"

    @classmethod
    def check(cls, device: str, precision: str, options: dict[str, Any] | None = None) -> None:
        """Raise RuntimeUnavailable when this device / precision cannot run; cheap, builds nothing."""
        if not cls.is_available():
            raise RuntimeUnavailable(cls.unavailable_reason())
        check_device_name(device)
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
        if precision not in cls.precisions:
            raise RuntimeUnavailable(
                f"{cls.name} runtime does not offer {precision} (it offers {', '.join(cls.precisions)})")

    @classmethod
    def auto_options(cls, device: str = "cpu", threads: int | None = None, *, spec: ModelSpec | None = None,
                     precision: str | None = None) -> dict[str, Any]:
        """Options ``--backend auto`` opens (and probes) this backend with for ``spec`` at ``precision``;
        ``threads`` caps them."""
        return {}

    @classmethod
    def modifies_module(cls, device: str, precision: str, options: dict[str, Any]) -> bool:
        """True when ``load`` would change a given nn.Module in place (the caller passes a copy)."""
        return False

    @classmethod
    def int8_quantizer(cls) -> str | None:
        """The first of :attr:`int8_quantizers` whose library is installed here (None: none is)."""
        return next((q for q in cls.int8_quantizers if _installed(QUANTIZER_LIBRARIES[q])), None)

    @classmethod
    def make_artifact(cls, source, weights, precision: str, *, seed: int = 0, spec: ModelSpec | None = None,
                      artifact: "ArtifactOptions | None" = None):
        """The file ``load`` takes, made from ``source`` (a ModelSpec or an nn.Module) and cached:
        the ONNX export, or for int8 the file of :meth:`int8_quantizer` calibrated on
        ``artifact.calib``. ``spec`` drives calibration; the export is always made from the model's own spec."""
        from segdeploy.core.registry import get_spec

        artifact = artifact or ArtifactOptions()
        export_options, calib = artifact.export, artifact.calib
        base_spec = get_spec(getattr(source, "segdeploy_spec", source))
        if precision != "int8":
            from segdeploy.convert.export_cache import cached_export

            return cached_export(source, weights, seed=seed, spec=base_spec, **(export_options or {}))
        if calib is None:
            from segdeploy.core.errors import UsageError

            raise UsageError(
                "int8 needs a quantized model or calibration images to make one: add --onnx FILE (made with "
                "`segdeploy quantize`) or, where the command has it, --calib DIR (photos like the ones to "
                "predict; Python: onnx_path= / calib=)")
        quantizer = cls.int8_quantizer()
        if quantizer == "nncf":
            from segdeploy.convert.nncf_quantize import cached_nncf_quantize as quantize
        elif quantizer == "ort-qdq":
            from segdeploy.convert.quantize import cached_quantize as quantize
        else:
            raise RuntimeUnavailable(f"{cls.name}: no int8 quantizer installed "
                                     f"({', '.join(cls.int8_quantizers) or 'it declares none'})")
        return quantize(source, weights, calib, num_calib=artifact.num_calib, seed=seed, spec=spec or base_spec,
                        export_options=export_options)

    # -- life cycle ---------------------------------------------------------------------------
    @abstractmethod
    def load(self, artifact: Any) -> "Runtime":
        """Prepare the network from ``artifact`` (nn.Module or ONNX path); returns self."""

    @abstractmethod
    def run(self, batch: np.ndarray, outputs: Sequence[int] | None = None) -> list[np.ndarray]:
        """NCHW float32 batch -> float32 outputs (batch axis first) in ``spec.output_names`` order.

        ``outputs``: indices into ``spec.output_names`` to return (in that order); None = all.
        """

    def warmup(self, batch_shape: tuple[int, ...], iterations: int = 2) -> None:
        """Run ``iterations`` untimed batches of ``batch_shape`` (non-zero data) to trigger lazy work
        (kernel selection, compilation, memory pools) before anything is timed."""
        rng = np.random.default_rng(12345)
        batch = rng.standard_normal(tuple(batch_shape), dtype=np.float32)
        for _ in range(iterations):
            self.run(batch)

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What actually runs: backend, library versions, device name, provider, precision, threads."""

    # -- helpers for subclasses ----------------------------------------------------------------
    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        if not self.loaded:
            raise RuntimeError(f"{self.name} runtime: call load() before run()")
        if not isinstance(batch, np.ndarray):
            raise TypeError(f"{self.name} runtime: run() takes a numpy array, got {type(batch).__name__}")
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"{self.name} runtime: expected an N x 3 x H x W batch, got shape {batch.shape}")
        multiple = self.spec.preprocess.multiple_of
        if multiple > 1 and (batch.shape[2] % multiple or batch.shape[3] % multiple):
            raise ValueError(f"{self.spec.name} needs height and width divisible by {multiple}; "
                             f"got {batch.shape[2]}x{batch.shape[3]}")
        return np.ascontiguousarray(batch, dtype=np.float32)

    def _output_indices(self, outputs: Sequence[int] | None) -> list[int]:
        """Validated output indices (all when ``outputs`` is None)."""
        count = len(self.spec.output_names)
        if outputs is None:
            return list(range(count))
        indices = [int(i) for i in outputs]
        bad = [i for i in indices if not 0 <= i < count]
        if bad or not indices:
            raise ValueError(f"{self.name} runtime: output indices {list(outputs)} out of range; "
                             f"{self.spec.name} has {count} outputs ({', '.join(self.spec.output_names)})")
        return indices

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec.name} {self.device} {self.precision}>"


def decode_outputs(spec: ModelSpec) -> tuple[int, ...] | None:
    """Indices of the outputs decoding reads (None when the network has one output: nothing to save)."""
    if len(spec.output_names) <= 1:
        return None
    return (int(spec.decode.output_index),)


def check_device_name(device: str) -> None:
    if device not in DEVICES and not str(device).startswith("cuda:"):
        raise UsageError(f"unknown device {device!r}; choose cpu or cuda (cuda:N)")


def physical_cores() -> int:
    """Physical cores available to this process (hyper-threads counted once).

    Counts distinct (physical id, core id) pairs in /proc/cpuinfo among the CPUs this process may
    run on; falls back to the affinity set size, then os.cpu_count().
    """
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = set(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            processor = physical = None
            for line in handle:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "processor":
                    processor, physical = int(value), "0"
                elif key == "physical id":
                    physical = value
                elif key == "core id" and processor in allowed:
                    cores.add((physical or "0", value))
    except (OSError, ValueError):
        cores = set()
    return max(1, len(cores) or len(allowed) or (os.cpu_count() or 1))


#: the library each int8 quantizer needs
QUANTIZER_LIBRARIES = {"nncf": "nncf", "ort-qdq": "onnxruntime"}
#: entry-point group third-party backends register through (a module that registers on import, a
#: Runtime subclass, or a callable that registers)
ENTRY_POINT_GROUP = "segdeploy.backends"
_BUILTIN = ("torch_backend", "onnxruntime_backend", "openvino_backend")

_REGISTRY: dict[str, type[Runtime]] = {}
_PLUGIN_ERRORS: dict[str, str] = {}
_loaded = False
_loading = threading.RLock()


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def register_runtime(cls: type[Runtime]) -> type[Runtime]:
    """Class decorator: make a backend available to :func:`open_runtime` under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.consumes not in ("module", "onnx", "artifact"):
        raise ValueError(f"{cls.__name__}.consumes must be 'module', 'onnx' or 'artifact', got {cls.consumes!r}")
    _REGISTRY[cls.name] = cls
    return cls


def _load_plugin(entry) -> None:
    try:
        target = entry.load()
        if isinstance(target, type) and issubclass(target, Runtime):
            register_runtime(target)
        elif callable(target):
            target()
    except Exception as exc:  # a broken plugin must not break the other backends
        _PLUGIN_ERRORS[entry.name] = f"{entry.value}: {type(exc).__name__}: {exc}"
        warnings.warn(f"segdeploy: backend plugin {entry.name!r} failed to load: {exc}", stacklevel=4)


def ensure_loaded() -> None:
    """Import the built-in backends and the ``segdeploy.backends`` entry points, once."""
    global _loaded
    if _loaded:
        return
    with _loading:
        if _loaded:
            return
        _loaded = True
        for name in _BUILTIN:
            importlib.import_module(f"segdeploy.backends.{name}")
        try:
            entries = metadata.entry_points(group=ENTRY_POINT_GROUP)
        except Exception as exc:  # a corrupt distribution's metadata
            _PLUGIN_ERRORS["<entry points>"] = f"{type(exc).__name__}: {exc}"
            entries = ()
        for entry in entries:
            _load_plugin(entry)


def plugin_errors() -> dict[str, str]:
    """{entry point name: why it failed to load} for backend plugins that could not be loaded."""
    ensure_loaded()
    return dict(_PLUGIN_ERRORS)


def get_runtime_class(name: str) -> type[Runtime]:
    ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown backend {name!r}; choose from {', '.join(_REGISTRY)}") from None


def backend_names() -> list[str]:
    """Every registered backend, built-in first, in registration order."""
    ensure_loaded()
    return list(_REGISTRY)


def by_preference(names=None) -> list[str]:
    """``names`` (default: every backend), the preferred (faster) engine first."""
    names = backend_names() if names is None else list(names)
    return sorted(names, key=lambda n: get_runtime_class(n).preference)


def is_auto(backend: str) -> bool:
    """True for "auto", the choice :func:`segdeploy.backends.open_runtime` makes by probing (no backend)."""
    return backend == "auto"


def consumes(backend: str) -> str:
    """What ``backend`` loads: "module", "onnx" or "artifact" (see :attr:`Runtime.consumes`)."""
    return get_runtime_class(backend).consumes


def file_backends() -> list[str]:
    """Backends that read a given ONNX file (``--onnx``), the preferred first."""
    return [n for n in by_preference() if ".onnx" in get_runtime_class(n).reads]


def module_backends() -> list[str]:
    """Backends that run the PyTorch module itself (the reference runs on the first)."""
    return [n for n in backend_names() if get_runtime_class(n).consumes == "module"]
