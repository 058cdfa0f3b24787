"""The options of a job, as objects: which runtime it opens (:class:`RuntimeRequest`) and how a
``predict`` or ``eval`` job runs (:class:`PredictOptions`, :class:`EvalOptions`).

The local engine, the Ray engine, the server and the command line all pass these objects, so an
option is declared once (here and in the CLI) instead of in every signature on its way down.
Each class has :meth:`of`, which takes the flat keywords a Python caller writes
(``PredictOptions.of(backend="openvino", cutout=True)``) and puts the runtime's among them into
its :class:`RuntimeRequest`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from segdeploy.engine.images import DEFAULT_MAX_PIXELS
from segdeploy.engine.pipeline import DEFAULT_MEMORY_BUDGET


@dataclass(frozen=True)
class RuntimeRequest:
    """Which runtime to open for a model: what :func:`segdeploy.open_runtime` is given.

    Attributes:
        weights: checkpoint path, packaged variant name or "random" (None: the model's default).
        backend: "auto" or a registered backend.
        device: "cpu" or "cuda" ("cuda:N").
        precision: "fp32", "fp16", "bf16", "tf32" or "int8"; None: fp32, or auto's choice.
        onnx_path: an ONNX (or backend) file to run instead of exporting the model.
        calib: calibration images for int8 without ``onnx_path`` (a folder, paths or arrays).
        seed: seed of random weights (part of the run's identity, so it is recorded).
        backend_options: the backend's own options (threads, mode, channels_last, streams, ...);
            with "auto" they apply when auto picks a backend that has them.
    """

    weights: Any = None
    backend: str = "auto"
    device: str = "cpu"
    precision: str | None = None
    onnx_path: str | os.PathLike | None = None
    calib: Any = None
    seed: int = 0
    backend_options: Mapping[str, Any] = field(default_factory=dict)

    def open(self, model):
        """The runtime, opened (auto probes, exports or quantizes as the request needs)."""
        from segdeploy.backends import ArtifactOptions, open_runtime

        artifact = ArtifactOptions(calib=self.calib) if self.calib is not None else None
        return open_runtime(model, self.backend, self.device, self.precision, self.weights, self.onnx_path,
                            seed=self.seed, artifact=artifact, **dict(self.backend_options))

    @classmethod
    def of(cls, **settings: Any) -> "RuntimeRequest":
        """A request from flat keywords; names that are not fields are backend options."""
        known = {f.name for f in dataclasses.fields(cls)}
        extra = {key: settings.pop(key) for key in list(settings) if key not in known}
        if extra:
            settings["backend_options"] = {**dict(settings.get("backend_options") or {}), **extra}
        return cls(**settings)


def _split(cls, settings: dict[str, Any]):
    """``cls`` from flat keywords: the RuntimeRequest's own go into its ``runtime`` field."""
    own = {f.name for f in dataclasses.fields(cls)}
    runtime_names = {f.name for f in dataclasses.fields(RuntimeRequest)}
    unknown = sorted(set(settings) - own - runtime_names)
    if unknown:
        raise TypeError(f"{cls.__name__} has no option {', '.join(unknown)}")
    runtime = {key: settings.pop(key) for key in list(settings) if key in runtime_names}
    if runtime:
        base = settings.pop("runtime", None) or RuntimeRequest()
        settings["runtime"] = dataclasses.replace(base, **runtime)
    return cls(**settings)


@dataclass(frozen=True)
class PredictOptions:
    """How a ``predict`` job runs, besides its inputs and output folder.

    Attributes:
        runtime: the runtime to open (:class:`RuntimeRequest`).
        batch_size: images per forward pass.
        workers: reader / writer threads (None: CPU count, at most 8).
        recursive: search input folders recursively.
        cutout: also write ``<stem>_cutout.png`` (the image with the mask as alpha).
        save_prob: also write ``<stem>.npy``, the float32 probability map.
        background: composite cut-outs onto this colour (implies ``cutout``).
        overwrite: replace outputs made with other settings instead of refusing.
        max_size: longest side for native-resolution models ("spec": the model's default; 0: none).
        max_pixels: refuse images with more pixels than this, before decoding them.
        memory_budget: bytes of decoded images and network inputs held at once.
    """

    runtime: RuntimeRequest = field(default_factory=RuntimeRequest)
    batch_size: int = 1
    workers: int | None = None
    recursive: bool = False
    cutout: bool = False
    save_prob: bool = False
    background: tuple[int, ...] | None = None
    overwrite: bool = False
    max_size: int | None | str = "spec"
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET

    @property
    def writes_cutout(self) -> bool:
        """A background colour is only seen in a cut-out, so it asks for one."""
        return self.cutout or self.background is not None

    @classmethod
    def of(cls, **settings: Any) -> "PredictOptions":
        """Options from flat keywords (``backend=``, ``weights=`` ... go into ``runtime``)."""
        return _split(cls, settings)


@dataclass(frozen=True)
class EvalOptions:
    """How an ``eval`` job runs, besides the model, dataset and data root.

    Attributes:
        runtime: the runtime to open (:class:`RuntimeRequest`).
        batch_size: images per forward pass (models that take each image at its own size batch
            only images of equal size).
        limit: score only the first N samples.
        save_masks: also write each predicted mask under this folder.
        layout_options: options of the dataset layout (e.g. a split name).
        protocol: settings of the model's own test-time protocol (``ModelSpec.protocol``), e.g.
            ``{"name": "multiscale", "pad_size": (512, 512)}``; None: the model's defaults. A model
            without one ignores them.
        workers: reader / decoder threads (None: CPU count, at most 8).
    """

    runtime: RuntimeRequest = field(default_factory=RuntimeRequest)
    batch_size: int = 1
    limit: int | None = None
    save_masks: str | os.PathLike | None = None
    layout_options: Mapping[str, Any] | None = None
    protocol: Mapping[str, Any] | None = None
    workers: int | None = None

    @classmethod
    def of(cls, **settings: Any) -> "EvalOptions":
        """Options from flat keywords (``backend=``, ``weights=`` ... go into ``runtime``)."""
        return _split(cls, settings)
