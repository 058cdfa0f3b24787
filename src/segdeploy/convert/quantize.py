"""Post-training int8 quantization with calibration images: ``segdeploy quantize``.

Method "ort-qdq": ONNX Runtime static quantization (``onnxruntime.quantization.quantize_static``)
in QDQ format — QuantizeLinear/DequantizeLinear pairs around the quantized operators, which both
ONNX Runtime (CPU) and OpenVINO (CPU, as FakeQuantize) execute as int8 kernels:

* weights: int8, symmetric, per output channel;
* activations: uint8, asymmetric, per tensor, ranges from MinMax calibration (or entropy /
  percentile) over the calibration images, each preprocessed exactly as at inference
  (``segdeploy.engine.images.read_image`` + ``segdeploy.engine.transforms.preprocess``), fed one at a time;
* the fp32 graph is first prepared with ``quant_pre_process`` (shape inference, BatchNorm folding)
  when that succeeds; ``op_types`` restricts which operators are quantized (default Conv,
  ConvTranspose, MatMul, Gemm: the compute; resizes, pools and element-wise ops stay float).

The file's ``metadata_props`` keep the fp32 export's entries and add ``segdeploy_quantization``
(JSON: method, format, types, per-channel, calibration method, number and identity of the
calibration images, the fp32 source's sha256). Written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from segdeploy.convert.ort_prepare import pre_process, quiet_logging
from segdeploy.core.errors import UsageError
from segdeploy.core.specs import ModelSpec

from segdeploy.core.registry import get_spec

DEFAULT_NUM_CALIB = 32
METHODS = ("ort-qdq",)
CALIBRATE_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")
def float_convs(spec: ModelSpec, names: Iterable[str]) -> list[str]:
    """Those of ``names`` (convolution node names) that the model keeps float in int8
    (``spec.int8_float_layers``, matched as parts of the names; OpenVINO keeps ONNX node names in
    its operation names, so one list serves both quantizers)."""
    parts = tuple(spec.int8_float_layers)
    return [name for name in names if any(part in name for part in parts)]


@dataclass(frozen=True)
class QuantizeResult:
    path: str
    model: str
    source_onnx: str
    method: str
    calibrate_method: str
    per_channel: bool
    num_calib: int
    calib_source: str
    quantized_nodes: int
    seconds: float
    metadata: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calib_entries(calib, spec: ModelSpec, num_calib: int) -> tuple[list[Any], str]:
    """The first ``num_calib`` calibration entries (paths or arrays) and a description of them."""
    from segdeploy.engine.finder import find_images

    if calib is None:
        raise ValueError("quantization needs calibration images (a folder, image paths, or arrays)")
    if isinstance(calib, (str, os.PathLike)):
        calib = [calib]
    entries: list[Any] = []
    folders = []
    for item in calib:
        if isinstance(item, np.ndarray):
            entries.append(item)
        else:
            found = [path for path, _ in find_images([item])]
            if not found:
                raise UsageError(f"--calib {item}: no calibration images found (give a folder of JPEG/PNG photos)")
            entries.extend(found)
            folders.append(str(item))
        if len(entries) >= num_calib:
            break
    entries = entries[:num_calib]
    if not entries:
        raise UsageError("no calibration images given")
    source = ", ".join(folders) if folders else f"{len(entries)} arrays"
    return entries, source


def has_vnni() -> bool:
    """True when the CPU has int8 dot-product instructions (AVX-512 VNNI / AVX-VNNI / AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        return True  # unknown: assume a modern CPU
    return any(f in flags.split() for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def calib_identity(entries: list[Any]) -> str:
    digest = hashlib.sha256()
    for entry in entries:
        if isinstance(entry, np.ndarray):
            digest.update(str(entry.shape).encode() + str(entry.dtype).encode())
            digest.update(np.ascontiguousarray(entry).tobytes())
        else:
            stat = Path(entry).stat()
            digest.update(f"{Path(entry).resolve()}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


def calib_input(entry, spec: ModelSpec) -> np.ndarray:
    """One calibration input, 1 x 3 x H x W float32."""
    from segdeploy.engine.images import read_image
    from segdeploy.engine.transforms import preprocess

    if isinstance(entry, np.ndarray) and entry.dtype != np.uint8:
        chw = np.asarray(entry, dtype=np.float32)  # already preprocessed (3 x H x W)
        if chw.ndim != 3 or chw.shape[0] != 3:
            raise ValueError(f"a float calibration array must be 3 x H x W, got {chw.shape}")
    else:
        image = entry if isinstance(entry, np.ndarray) else read_image(entry)
        chw = preprocess(image, spec)
    return chw[None]


class ImageCalibrationReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over preprocessed calibration images."""

    def __init__(self, entries: list[Any], spec: ModelSpec, input_name: str):
        self.entries = entries
        self.spec = spec
        self.input_name = input_name
        self._iter: Iterator[Any] | None = None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter = iter(self.entries)
        entry = next(self._iter, None)
        if entry is None:
            return None
        return {self.input_name: calib_input(entry, self.spec)}

    def rewind(self) -> None:
        self._iter = None


@dataclass(frozen=True)
class QuantizeOptions:
    """How :func:`quantize_onnx` quantizes and calibrates (the defaults are the module doc's).

    Attributes:
        method: "ort-qdq" (the only one; see module doc).
        num_calib: use the first N calibration images; None = ``DEFAULT_NUM_CALIB`` (32).
        input_size: (H, W) calibration images are squashed to, instead of the spec's preprocessing
            size: for an fp32 export traced at another size than the spec's (small test models).
        per_channel: per-output-channel weight scales (else one per tensor).
        calibrate_method: "minmax", "entropy" or "percentile".
        op_types: operator types to quantize; None = every type ONNX Runtime can quantize. The
            default quantizes the compute only; resizes, pools and element-wise ops stay float.
        reduce_range: 7-bit weights (``quantize_static(reduce_range=True)``); None = on for CPUs
            without VNNI, whose int8 kernels add pairs of u8 x s8 products in int16 with saturation
            (``vpmaddubsw``) — full 8-bit weights overflow there and deep trained networks drift far
            from fp32.
    """

    method: str = "ort-qdq"
    num_calib: int | None = None
    input_size: tuple[int, int] | None = None
    per_channel: bool = True
    calibrate_method: str = "minmax"
    op_types: tuple[str, ...] | None = DEFAULT_OP_TYPES
    reduce_range: bool | None = None


def quantize_onnx(
    model,
    weights=None,
    calib: str | os.PathLike | Iterable | None = None,
    out_path: str | os.PathLike | None = None,
    options: QuantizeOptions | None = None,
    *,
    onnx_path: str | os.PathLike | None = None,
    seed: int = 0,
    spec: ModelSpec | None = None,
    export_options: dict[str, Any] | None = None,
) -> QuantizeResult:
    """Quantize ``model`` to int8 (QDQ ONNX) calibrating on ``calib`` images.

    Args:
        model: registry name, ModelSpec, or module from create_model.
        weights: checkpoint path or "random" (not needed with ``onnx_path`` or a module).
        calib: folder of images, image paths, HxWx3 uint8 arrays or preprocessed 3xHxW float arrays.
        out_path: destination ``.onnx``.
        options: how to quantize (:class:`QuantizeOptions`; None = its defaults).
        onnx_path: the fp32 ONNX to quantize (default: the cached export of model + weights).
        seed: seed of random weights, for the cached export.
        spec: the ModelSpec of a plain module, or one used instead of the model's own for calibration.
        export_options: keywords of :func:`segdeploy.convert.export_cache.cached_export` for the
            fp32 export made when ``onnx_path`` is not given.

    Returns:
        QuantizeResult (also written to ``<out_path>.json``).
    """
    from segdeploy.convert.export import spec_with_input_size
    from segdeploy.convert.export_cache import cached_export
    from segdeploy.convert.onnx_info import read_metadata
    from segdeploy.engine.writers import atomic_write_text
    from segdeploy.zoo.checkpoints import file_sha256

    options = options if options is not None else QuantizeOptions()
    if options.method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {options.method!r}")
    if options.calibrate_method not in CALIBRATE_METHODS:
        raise ValueError(f"calibrate_method must be one of {', '.join(CALIBRATE_METHODS)}")
    if out_path is None:
        raise ValueError("quantize_onnx needs out_path")
    started = time.perf_counter()
    reduce_range = not has_vnni() if options.reduce_range is None else options.reduce_range
    base_spec = own_spec(model, spec)
    spec = spec or base_spec
    if options.input_size is not None:
        spec = spec_with_input_size(spec, tuple(options.input_size))
    entries, calib_source = calib_entries(calib, spec, int(options.num_calib or DEFAULT_NUM_CALIB))
    if onnx_path is None:
        onnx_path = cached_export(model if not isinstance(model, str) else base_spec, weights, seed=seed,
                                  spec=base_spec, **(export_options or {}))
    onnx_path = Path(onnx_path)
    source_meta = read_metadata(onnx_path)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    proto, excluded = _quantized_graph(onnx_path, entries, spec, options, reduce_range)
    metadata = dict(source_meta)
    metadata["segdeploy_quantization"] = json.dumps(
        _quantization_record(options, reduce_range, entries, calib_source, excluded, onnx_path))
    quantized_nodes = _save_with_metadata(proto, metadata, out_path)
    result = QuantizeResult(
        path=str(out_path), model=spec.name, source_onnx=str(onnx_path), method=options.method,
        calibrate_method=options.calibrate_method, per_channel=options.per_channel, num_calib=len(entries),
        calib_source=calib_source, quantized_nodes=quantized_nodes, seconds=time.perf_counter() - started,
        metadata=metadata)
    record = result.to_dict()
    record["file_sha256"] = file_sha256(out_path)
    atomic_write_text(str(out_path) + ".json", json.dumps(record, indent=2))
    return result


def _quantized_graph(onnx_path: Path, entries: list[Any], spec: ModelSpec, options: QuantizeOptions,
                     reduce_range: bool):
    """(the QDQ ModelProto ONNX Runtime's ``quantize_static`` makes of ``onnx_path``, the Conv nodes
    left float by :func:`float_convs`)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    calib_methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                     "percentile": CalibrationMethod.Percentile}
    with tempfile.TemporaryDirectory(prefix="segdeploy-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        source = pre_process(onnx_path, prepared)
        graph = onnx.load(str(source), load_external_data=False).graph
        input_name = graph.input[0].name
        excluded = float_convs(spec, [n.name for n in graph.node if n.op_type == "Conv"])
        reader = ImageCalibrationReader(entries, spec, input_name)
        quantized_tmp = Path(tmp) / "quantized.onnx"
        try:
            with quiet_logging():
                quantize_static(
                    str(source), str(quantized_tmp), reader, quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(options.op_types) if options.op_types else None,
                    per_channel=options.per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=calib_methods[options.calibrate_method],
                    extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
                    reduce_range=reduce_range, nodes_to_exclude=excluded,
                )
        except Exception as exc:
            raise RuntimeError(
                f"{spec.name}: ONNX Runtime quantize_static failed: {type(exc).__name__}: {exc}") from exc
        return onnx.load(str(quantized_tmp)), excluded


def _quantization_record(options: QuantizeOptions, reduce_range: bool, entries: list[Any], calib_source: str,
                         excluded: list[str], onnx_path: Path) -> dict[str, Any]:
    """The ``segdeploy_quantization`` metadata entry: how the file was made and from what."""
    from segdeploy.zoo.checkpoints import file_sha256

    return {
        "method": options.method, "format": "QDQ", "activation_type": "uint8 asymmetric per-tensor",
        "weight_type": "int8 symmetric " + ("per-channel" if options.per_channel else "per-tensor"),
        "calibrate_method": options.calibrate_method, "num_calib": len(entries), "calib_source": calib_source,
        "calib_identity": calib_identity(entries)[:16],
        "op_types": list(options.op_types) if options.op_types else None,
        "reduce_range": reduce_range, "float_nodes": excluded,
        "source_sha256": file_sha256(onnx_path),
    }


def _save_with_metadata(proto, metadata: dict[str, str], out_path: Path) -> int:
    """Write ``proto`` with ``metadata`` to ``out_path`` atomically; returns its number of quantized tensors."""
    import onnx

    from segdeploy.convert.onnx_info import set_metadata
    from segdeploy.engine.writers import NEW_FILE_MODE

    set_metadata(proto, metadata)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    os.close(fd)
    os.chmod(tmp_name, NEW_FILE_MODE)
    try:
        onnx.save_model(proto, tmp_name)
        os.replace(tmp_name, out_path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return sum(node.op_type == "QuantizeLinear" for node in proto.graph.node)


def _recorded_sha256(path: Path) -> str | None:
    """The sha256 the quantizer recorded next to ``path`` when it wrote it (None if unreadable)."""
    try:
        return json.loads(Path(str(path) + ".json").read_text()).get("file_sha256")
    except (OSError, ValueError, AttributeError):
        return None


def own_spec(model, spec: ModelSpec | None) -> ModelSpec:
    """The spec the model itself carries (registry entry or a module's ``segdeploy_spec``)."""
    if isinstance(model, (str, ModelSpec)):
        return get_spec(model)
    own = getattr(model, "segdeploy_spec", None) or spec
    if own is None:
        raise ValueError("a plain nn.Module needs spec=ModelSpec(...)")
    return own


def cached_quantize(model, weights, calib, *, num_calib: int | None = None, seed: int = 0,
                    spec: ModelSpec | None = None, export_options: dict[str, Any] | None = None,
                    calibrate_method: str = "minmax") -> Path:
    """Path of an int8 model of ``model`` calibrated on ``calib``, quantizing into the cache when needed.

    The cache key covers the fp32 export (file name), the calibration images (paths, sizes and
    modification times, or array bytes), their number, the calibration method and the library
    versions; an entry is reused only when its sha256 is the one recorded when it was written.
    """
    from segdeploy.convert.export_cache import cache_dir, cached_export
    from segdeploy.convert.fingerprints import artifact_intact, library_versions

    base_spec = own_spec(model, None)
    spec = spec or base_spec
    num = int(num_calib or DEFAULT_NUM_CALIB)
    entries, _ = calib_entries(calib, spec, num)
    fp32 = cached_export(model if not isinstance(model, str) else base_spec, weights, seed=seed, spec=base_spec,
                         **(export_options or {}))
    key = json.dumps({"fp32": fp32.name, "calib": calib_identity(entries), "num": len(entries),
                      "method": calibrate_method, "pre": [spec.preprocess.size, spec.preprocess.scale],
                      "reduce_range": not has_vnni(), "float": list(spec.int8_float_layers),
                      "libraries": library_versions()},
                     sort_keys=True, default=str)
    path = cache_dir() / "onnx" / f"{fp32.stem}-int8-{hashlib.sha256(key.encode()).hexdigest()[:8]}.onnx"
    if artifact_intact(path, _recorded_sha256(path)):
        return path
    options = QuantizeOptions(num_calib=len(entries), calibrate_method=calibrate_method)
    quantize_onnx(model, weights, entries, path, options, onnx_path=fp32, seed=seed, spec=spec)
    return path

