"""OpenVINO int8 through NNCF (the quantizer made for OpenVINO), beside the ONNX Runtime QDQ path.

``nncf_quantize`` reads the fp32 ONNX export with OpenVINO, runs ``nncf.quantize`` with a
calibration ``nncf.Dataset`` of preprocessed images (each prepared exactly as at inference,
:func:`segdeploy.convert.quantize.calib_input`), and saves an OpenVINO IR (``.xml`` + ``.bin``,
weights kept fp32 so nothing but the quantized operations changes) whose FakeQuantize operations
OpenVINO's CPU plugin runs as int8 kernels.

Mixed-precision fallback: ``ignored`` names convolutions (ONNX node names as OpenVINO reads them)
that stay in float — :func:`sensitive_convolutions` chooses them by per-layer sensitivity: each
convolution quantized alone (all others float), the ones whose error on the calibration outputs
is largest are kept float. ``ignore_last`` keeps the last N convolutions in execution order
float (cheap, and for networks whose last convolutions produce the logits — U²-Net's side and
fuse convolutions — the most sensitive ones). The convolutions a registry model is known to need
float (``spec.int8_float_layers``) always are.

Settings used: preset MIXED (symmetric weights, asymmetric activations: post-ReLU/sigmoid tensors
are not centred), fast bias correction, subset size = the number of calibration images.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from segdeploy.convert.quantize import float_convs, has_vnni
from segdeploy.core.specs import ModelSpec


def _quiet() -> None:
    for name in ("nncf", "openvino"):
        logging.getLogger(name).setLevel(logging.ERROR)


def conv_names(model) -> list[str]:
    """Friendly names of the Convolution-type operations of an OpenVINO model, in topological order."""
    kinds = {"Convolution", "GroupConvolution", "ConvolutionBackpropData"}
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in kinds]


def nncf_quantize(onnx_path: str | Path, spec: ModelSpec, calib_inputs: Sequence[np.ndarray], out_xml: str | Path, *,
                  ignored: Sequence[str] = (), ignore_last: int = 0, overflow_fix: str | None = None,
                  metadata: dict[str, Any] | None = None) -> Path:
    """Quantize ``onnx_path`` with NNCF on ``calib_inputs`` (1x3xHxW float32 each); write ``out_xml``.

    ``overflow_fix`` ("enable" | "first_layer_only" | "disable"; default "enable" on CPUs without
    VNNI, else NNCF's "first_layer_only"): without VNNI, int8 convolutions multiply-add pairs of
    u8 x s8 products into int16 with saturation (``vpmaddubsw``); NNCF's fix quantizes weights to 7
    bits so that no pair can overflow. Without it, a deep trained network's outputs drift far
    (measured: trained U²-Netp on an AVX2 EPYC, mask IoU 0.65 vs fp32).
    """
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    _quiet()
    core = ov.Core()
    model = core.read_model(str(onnx_path))
    names = list(ignored) + float_convs(spec, conv_names(model))  # the model's known int8-breaking convs
    if ignore_last:
        names += conv_names(model)[-int(ignore_last):]
    scope = nncf.IgnoredScope(names=sorted(set(names)), validate=False) if names else None
    dataset = nncf.Dataset(list(calib_inputs))
    t0 = time.perf_counter()
    fix = overflow_fix or ("first_layer_only" if has_vnni() else "enable")
    quantized = nncf.quantize(model, dataset, preset=nncf.QuantizationPreset.MIXED, subset_size=len(calib_inputs),
                              fast_bias_correction=True, ignored_scope=scope,
                              advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix(fix)))
    info = {"method": "nncf", "nncf": nncf.__version__, "preset": "mixed", "calibration_images": len(calib_inputs),
            "overflow_fix": fix,
            "ignored": sorted(set(names)), "seconds": round(time.perf_counter() - t0, 2), **(metadata or {})}
    quantized.set_rt_info(json.dumps(info), ["segdeploy_quantization"])
    out = Path(out_xml)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.xml")
    ov.save_model(quantized, str(tmp), compress_to_fp16=False)
    # Publish the pair atomically enough: .bin first, then the .xml that names it.
    tmp.with_suffix(".bin").replace(out.with_suffix(".bin"))
    text = tmp.read_text().replace(tmp.with_suffix(".bin").name, out.with_suffix(".bin").name)
    tmp.unlink()
    out.write_text(text)
    Path(str(out) + ".json").write_text(json.dumps(info, indent=2) + "\n")
    return out


def sensitive_convolutions(onnx_path: str | Path, calib_inputs: Sequence[np.ndarray], count: int,
                           output_index: int = 0) -> list[tuple[str, float]]:
    """The ``count`` convolutions whose quantization alone changes output ``output_index`` most.

    Sensitivity of a convolution = mean |int8 output − fp32 output| over the calibration inputs
    with only that convolution quantized (OpenVINO fp32 everywhere else). Costs one quantization
    per convolution: use on small networks or a few inputs.
    """
    import nncf
    import openvino as ov

    _quiet()
    core = ov.Core()
    model = core.read_model(str(onnx_path))
    names = conv_names(model)
    fp32 = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    refs = [fp32(x)[fp32.outputs[output_index]] for x in calib_inputs]
    scores = []
    for name in names:
        others = [n for n in names if n != name]
        q = nncf.quantize(core.read_model(str(onnx_path)), nncf.Dataset(list(calib_inputs)),
                          preset=nncf.QuantizationPreset.MIXED, subset_size=len(calib_inputs),
                          fast_bias_correction=True, ignored_scope=nncf.IgnoredScope(names=others, validate=False))
        compiled = core.compile_model(q, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        err = float(np.mean([np.abs(compiled(x)[compiled.outputs[output_index]] - r).mean()
                             for x, r in zip(calib_inputs, refs)]))
        scores.append((name, err))
    return sorted(scores, key=lambda item: -item[1])[:count]


def cached_nncf_quantize(model, weights, calib, *, num_calib: int | None = None, seed: int = 0,
                         spec: ModelSpec | None = None, ignored: Sequence[str] = (), ignore_last: int = 0,
                         overflow_fix: str | None = None, export_options: dict[str, Any] | None = None) -> Path:
    """Path of an NNCF int8 IR of ``model`` calibrated on ``calib``, quantizing into the cache when needed."""
    from segdeploy.convert.export_cache import cache_dir, cached_export
    from segdeploy.convert.quantize import DEFAULT_NUM_CALIB, calib_entries, calib_identity, calib_input, own_spec

    base_spec = own_spec(model, None)
    spec = spec or base_spec
    entries, _ = calib_entries(calib, spec, int(num_calib or DEFAULT_NUM_CALIB))
    fp32 = cached_export(model if not isinstance(model, str) else base_spec, weights, seed=seed, spec=base_spec,
                         **(export_options or {}))
    key = json.dumps({"fp32": fp32.name, "calib": calib_identity(entries), "num": len(entries),
                      "ignored": sorted(ignored), "ignore_last": ignore_last, "method": "nncf-mixed",
                      "float": list(spec.int8_float_layers),
                      "overflow_fix": overflow_fix or ("first_layer_only" if has_vnni() else "enable"),
                      "pre": [spec.preprocess.size, spec.preprocess.scale]}, sort_keys=True, default=str)
    path = cache_dir() / "openvino" / f"{fp32.stem}-nncf-{hashlib.sha256(key.encode()).hexdigest()[:8]}.xml"
    if path.is_file() and path.with_suffix(".bin").is_file() and Path(str(path) + ".json").is_file():
        return path
    inputs = [calib_input(entry, spec) for entry in entries]
    return nncf_quantize(fp32, spec, inputs, path, ignored=ignored, ignore_last=ignore_last,
                         overflow_fix=overflow_fix, metadata={"source_onnx": fp32.name, **_weights_meta(fp32)})


def _weights_meta(onnx_path: Path) -> dict[str, Any]:
    """The source export's weights record (its ``segdeploy_weights`` metadata), carried into the IR's
    sidecar so that runs on the IR still say which weights they ran (manifests, /v1/models)."""
    from segdeploy.convert.onnx_info import read_metadata

    try:
        weights = read_metadata(onnx_path).get("segdeploy_weights")
    except Exception:  # noqa: BLE001 - an export without metadata: nothing to carry
        return {}
    return {"segdeploy_weights": weights} if weights else {}
