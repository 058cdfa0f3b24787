"""One served model: its runtime(s), its fidelity verdict, and the per-request work around the
forward pass (bytes -> network input, network output -> response bytes).

``prepare`` and ``finish`` are plain blocking functions; the app runs them in its I/O thread pool
so that the event loop only moves bytes. ``finish`` produces exactly what ``segdeploy predict``
writes: ``get_task(spec).mask_image(pred)`` encoded by ``engine.writers.encode_png``.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from segdeploy.core.errors import GateFailed
from segdeploy.core.registry import get_spec
from segdeploy.engine.transforms import decode, preprocess_with_valid
from segdeploy.engine.writers import encode_png
from segdeploy.engine.inference_threads import calls_in_flight
from segdeploy.jobs.options import RuntimeRequest
from segdeploy.jobs.session import open_model_runtime
from segdeploy.serve import gate
from segdeploy.serve.batcher import batch_sizes
from segdeploy.serve.config import ServeConfig
from segdeploy.serve.imaging import image_from_bytes
from segdeploy.tasks import get_task

#: ?output= values: media type of each
OUTPUTS = {"mask": "image/png", "cutout": "image/png", "prob": "application/x-npy", "json": "application/json"}


@dataclass
class Prepared:
    """A request's image, decoded and preprocessed, waiting for its forward pass."""

    image: np.ndarray
    chw: np.ndarray
    valid_hw: tuple[int, int]
    read_s: float


class ModelService:
    """A loaded, checked model. Build with :meth:`load`; one per model name in an app."""

    def __init__(self, spec, runtimes: list[Any], *, config: ServeConfig, verdict: tuple[bool, dict[str, Any]],
                 weights: dict[str, Any] | None):
        self.spec = spec
        self.task = get_task(spec)
        self.runtimes = runtimes
        self.config = config
        self.verified, self.fidelity = verdict
        self.weights = weights
        self.artifact: dict[str, Any] | None = None
        self.loaded_at = time.time()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def unverified(self) -> bool:
        return not self.verified

    @classmethod
    def load(cls, model, request: RuntimeRequest | None = None, *, config: ServeConfig | None = None, reference=None,
             runtime=None, log: Callable[[str], None] | None = None) -> "ModelService":
        """Open ``config.workers`` runtimes as ``request`` says, run the fidelity gate, warm up.

        Raises:
            GateFailed: the gate failed and ``config.allow_unverified`` is off (nothing is served).
            RuntimeUnavailable, WeightsError, ModelNotFound: as ``open_runtime`` does.
        """
        say = log or (lambda message: None)
        config = config or ServeConfig()
        request = request or RuntimeRequest()
        spec = get_spec(model)
        if runtime is not None:
            runtimes = [runtime]
        else:
            served = dataclasses.replace(request, backend_options=serving_options(request.backend,
                                                                                  dict(request.backend_options)))
            runtimes = [open_model_runtime(spec, served) for _ in range(config.workers)]
        first = runtimes[0]
        chosen_backend, chosen_precision = first.name, first.precision
        if getattr(first, "selection", None):
            say(f"backend auto: {first.selection.get('why')}")
        record = _weights_of(first)
        trained = bool(record) and record.get("kind") != "random"
        passed, summary = _judge(spec, first, config, trained, say, request=request, reference=reference)
        if not passed:
            detail = "; ".join(summary["not_verified_because"])
            if not config.allow_unverified:
                raise GateFailed(f"serve {spec.name}: {chosen_backend} {chosen_precision} is not verified "
                                 f"({detail}); refusing to serve it. Choose another --backend/--precision, or pass "
                                 "--allow-unverified to serve it marked unverified")
            say(f"WARNING: not verified ({detail}); serving UNVERIFIED (--allow-unverified)")
        _release_gate_memory()
        service = cls(spec, runtimes, config=config, verdict=(passed, summary), weights=record)
        service.artifact = summary.get("served_artifact")
        chw, _ = preprocess_with_valid(gate.check_images(1, tuple(config.check_size))[0], spec)
        for rt in runtimes:  # first requests should not pay for lazy initialisation (or a compile per size)
            for size in batch_sizes(config.max_batch_size):
                rt.warmup((size, *chw.shape), iterations=calls_in_flight(rt))
        return service

    # -- per request (blocking; run in the I/O pool) ----------------------------------------------
    def prepare(self, data: bytes, name: str = "upload") -> Prepared:
        """Decode an upload and preprocess it (raises ImageReadError / ImageTooLarge)."""
        start = time.perf_counter()
        image = image_from_bytes(data, name, self.config.max_pixels)
        chw, valid = preprocess_with_valid(image, self.spec)
        return Prepared(image, chw, tuple(valid), time.perf_counter() - start)

    def finish(self, prepared: Prepared, outputs: list[np.ndarray], output: str = "mask",
               background: tuple[int, ...] | None = None, extra: dict[str, Any] | None = None) -> tuple[bytes, str]:
        """One item's raw outputs -> (response body, media type) for ``output``.

        mask: the PNG ``segdeploy predict`` writes; cutout: RGBA PNG (composited on ``background``
        when given); prob: the float32 map as a .npy file; json: size, model and the mask PNG in
        base64.
        """
        with np.errstate(over="ignore"):
            pred = decode(outputs, self.spec, prepared.image.shape[:2], prepared.valid_hw)
        if output == "mask":
            array, palette = self.task.mask_image(pred)
            return encode_png(array, palette), OUTPUTS[output]
        if output == "cutout":
            return encode_png(self.task.cutout(prepared.image, pred, background)), OUTPUTS[output]
        if output == "prob":
            buffer = io.BytesIO()
            np.save(buffer, pred.map.astype(np.float32), allow_pickle=False)
            return buffer.getvalue(), OUTPUTS[output]
        if output == "json":
            import json

            array, palette = self.task.mask_image(pred)
            body = {"model": self.name, "height": int(prepared.image.shape[0]), "width": int(prepared.image.shape[1]),
                    "task": self.task.name, "verified": self.verified,
                    "mask_png_base64": base64.b64encode(encode_png(array, palette)).decode("ascii"), **(extra or {})}
            return json.dumps(body).encode("utf-8"), OUTPUTS[output]
        raise ValueError(f"unknown output {output!r}")

    def describe(self) -> dict[str, Any]:
        """What GET /v1/models shows for this model."""
        first = self.runtimes[0]
        try:
            runtime = dict(first.describe())
        except Exception as exc:  # noqa: BLE001 - informative only
            runtime = {"describe_error": str(exc)}
        runtime.pop("weights", None)
        pre = self.spec.preprocess
        described = {
            "name": self.name, "title": self.spec.title, "task": self.task.name,
            "input": {"size": list(pre.size) if pre.size else None, "channel_order": pre.channel_order},
            "weights": self.weights, "artifact": self.artifact, "backend": first.name, "precision": first.precision,
            "selection": getattr(first, "selection", None), "runtime": runtime,
            "verified": self.verified, "unverified": self.unverified, "fidelity": self.fidelity,
            "workers": len(self.runtimes), "outputs": list(OUTPUTS),
        }
        return without_paths(described)


def _judge(spec, runtime, config: ServeConfig, trained: bool, say, *, request: RuntimeRequest,
           reference) -> tuple[bool, dict[str, Any]]:
    """The verdict on what ``runtime`` serves: the start-up gate on the check set (or ``reference``),
    then :func:`gate.acceptance`; ``(verified, summary)``."""
    import os

    from segdeploy.verify.compare import artifact_digest
    from segdeploy.verify.reference import preprocessing_fingerprint

    from segdeploy.backends.base import consumes

    backend, precision = runtime.name, runtime.precision
    # A backend that runs a file (ONNX, IR) is verified for that file, named by its sha256.
    runs_file = consumes(backend) != "module"
    # Judge the file the runtime runs (auto's int8 choice is a probed artifact, not a new quantization).
    weights, seed = request.weights, request.seed
    served_file = request.onnx_path or getattr(runtime, "onnx_path", None)
    artifact = None
    if runs_file and served_file and os.path.isfile(str(served_file)):
        artifact = {"name": os.path.basename(str(served_file)), "sha256": artifact_digest(served_file)}
    if reference is not None:
        say(f"fidelity verdict of {backend} {precision}: from {reference}")
        summary = gate.from_reference(spec, reference, backend, precision)
        expected = None
    else:
        checks = gate.check_set(config.check_images, tuple(config.check_size), trained)
        say(f"fidelity gate: {backend} {precision} vs torch fp32 on {len(checks)} check images"
            + (" (real photos among them)" if trained else ""))
        summary = gate.fidelity_gate(spec, weights=weights, backend=backend, precision=precision,
                                     device=request.device, seed=seed, onnx_path=served_file, images=checks)
        expected = set(summary.pop("expected_ids", None) or ())
    summary.pop("preprocessing_expected", None)
    why = gate.acceptance(summary, weights_fp=_served_weights_fp(runtime, spec, weights, seed, summary, reference),
                          preprocessing_fp=preprocessing_fingerprint(spec),
                          artifact_sha256=artifact["sha256"] if artifact else None,
                          required_ids=gate.required_photo_ids(config.check_images, trained), expected_ids=expected)
    if runs_file and artifact is None:
        why.append("the served model is not a file the gate can name (no ONNX / IR file)")
    summary["served_artifact"] = artifact
    summary["verified"] = not why
    summary["not_verified_because"] = why
    return not why, summary


def _served_weights_fp(runtime, spec, weights, seed: int, summary: dict[str, Any], reference) -> str | None:
    """The served weights' state_dict fingerprint: the module's own for PyTorch; for a file runtime
    the weights it was made from (the start-up gate loaded the same ``weights``)."""
    from segdeploy.verify.reference import weights_fingerprint

    module = getattr(runtime, "model", None)
    if module is not None and hasattr(module, "state_dict"):
        return weights_fingerprint(module)
    if reference is None:
        return (summary.get("weights") or {}).get("state_dict_sha256")
    from segdeploy.convert.export import resolve_module

    return weights_fingerprint(resolve_module(spec, weights, seed=seed, spec=spec)[0])


#: an absolute path, /a/b/c or ~/a/b or C:\\a\\b (not the // of a URL); group 1 is its last component
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])(?:~|[A-Za-z]:)?(?:[/\\][^\s/\\'\"]+)+[/\\]([^\s/\\'\"]+)")


def without_paths(data):
    """``data`` with every absolute file-system path (whole values and paths inside sentences)
    replaced by its last component: what a server shows about itself names files, it never maps
    the host's directories."""
    if isinstance(data, dict):
        return {key: without_paths(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [without_paths(value) for value in data]
    if isinstance(data, str):
        return _ABSOLUTE_PATH.sub(r"\1", data)
    return data


def _release_gate_memory() -> None:
    """The gate's reference model and float64 noise-floor run are garbage now; hand their heap back
    to the OS (glibc keeps freed arenas otherwise) so that the server's RSS is its serving size."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _weights_of(runtime) -> dict[str, Any] | None:
    record = getattr(runtime, "weights", None) or getattr(getattr(runtime, "model", None), "segdeploy_weights", None)
    if record is None:
        try:
            record = runtime.describe().get("weights")
        except Exception:  # noqa: BLE001
            return None
    if record is None:
        return None
    return record.to_dict() if hasattr(record, "to_dict") else dict(record)


def serving_options(backend: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """Runtime options of a served model: OpenVINO runs one stream over all cores unless asked
    (``segdeploy serve --streams N``, ``backend_options={"streams": N}``).

    Why one stream by default: a lone request then gets every core (u2netp 320² on a 2-core
    EPYC: 432 ms vs 698 ms with 2 streams) and batches fill the cores under load. Under steady
    load N one-core streams with one image per pass are faster (16 concurrent clients: 2.92 vs
    2.43 requests/s) and smaller (RSS 0.9 vs 2.4 GB) -- benchmarks/results/serve_u2netp_cpu.md;
    with streams, large batches are slow (batches up to 8 on 2 streams: 1.79 requests/s, RSS
    4.4 GB in a shorter run).
    """
    from segdeploy.backends import get_runtime_class, is_auto

    chosen = dict(options or {})
    if "streams" not in chosen and (is_auto(backend) or "streams" in get_runtime_class(backend).option_names):
        chosen["streams"] = 1
    return chosen
