"""int8 configurations of the trained U²-Netp: fidelity gate on real photos and speed vs fp32 (issue #13).

Throw-away measurement behind benchmarks/results/int8_trained_u2netp_cpu.md. Judges the 16 real
photos of tests/trained_u2netp.py (the PyTorch fp32 reference is computed once and reused), each
int8 candidate calibrated on a source disjoint from them; then times every candidate and the two
fp32 peers at batch 1, 320x320, with the same thread count.

    PYTHONPATH=src:tests python scripts/int8_trained_u2netp.py --out int8.json [--only NAME,...] [--calib SRC,...]

Candidates "pkg-*" and "ort-qdq-*" use the package's own quantizers (spec.int8_float_layers applied); the other "nncf-*" ones
build the IR here with the settings under test and no spec.int8_float_layers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def calib_sets(spec, count: int) -> dict[str, list[np.ndarray]]:
    """Calibration sources: scikit-image crops (disjoint regions of the judged photos), the photos
    shipped for calibration, and the demo's synthetic images."""
    import trained_u2netp as tu
    from segdeploy.convert.quantize import calib_input

    out = {"skimage-crops": [im for _, im in tu.real_photos()[16:16 + count]]}
    shipped = Path(__file__).resolve().parents[1] / "src/segdeploy/assets/calibration"
    if shipped.is_dir():
        out["shipped"] = sorted(str(p) for p in shipped.glob("*.jpg"))[:count]
    from segdeploy.recipes.demo import render_sample

    out["synthetic"] = [render_sample(16 + i, seed=0).image for i in range(count)]  # the demo's calibration
    return {name: [calib_input(e, spec) for e in entries] for name, entries in out.items()}


def nncf_ir(fp32_onnx, inputs, out_xml, *, ignore_last=0, fast_bias=True, preset="mixed", smooth=None,
            first_float=False, overflow="first_layer_only", float_convs=()):
    """An NNCF int8 IR with the settings under test (nncf_quantize fixes some of them)."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters,
                                                       AdvancedSmoothQuantParameters, OverflowFix)

    from segdeploy.convert.nncf_quantize import _quiet, conv_names

    _quiet()
    model = ov.Core().read_model(str(fp32_onnx))
    convs = conv_names(model)
    names = (convs[-ignore_last:] if ignore_last else []) + (convs[:1] if first_float else [])
    names += [c for c in convs if any(f"/{part}/" in c for part in float_convs)]
    scope = nncf.IgnoredScope(names=names, validate=False) if names else None
    advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix(overflow))
    if smooth is not None:
        advanced.smooth_quant_alphas = AdvancedSmoothQuantParameters(convolution=smooth)
    presets = {"mixed": nncf.QuantizationPreset.MIXED, "performance": nncf.QuantizationPreset.PERFORMANCE}
    q = nncf.quantize(model, nncf.Dataset(inputs), preset=presets[preset], subset_size=len(inputs),
                      fast_bias_correction=fast_bias, ignored_scope=scope, advanced_parameters=advanced)
    ov.save_model(q, str(out_xml), compress_to_fp16=False)
    return out_xml


CANDIDATES = {
    # name: (artifact kind, options of the artifact, backend, runtime options)
    "ort-qdq-minmax": ("qdq", {"calibrate_method": "minmax"}, "onnxruntime", {}),
    "ort-qdq-minmax@ov": ("qdq", {"calibrate_method": "minmax"}, "openvino", {}),
    "ort-qdq-minmax@ov-f32": ("qdq", {"calibrate_method": "minmax"}, "openvino", {"int8_rest": "f32"}),
    "ort-qdq-percentile": ("qdq", {"calibrate_method": "percentile"}, "onnxruntime", {}),
    "ort-qdq-percentile@ov": ("qdq", {"calibrate_method": "percentile"}, "openvino", {}),
    "ort-qdq-entropy": ("qdq", {"calibrate_method": "entropy"}, "onnxruntime", {}),
    "nncf-mixed": ("nncf", {}, "openvino", {}),
    "nncf-mixed-f32rest": ("nncf", {}, "openvino", {"int8_rest": "f32"}),
    "nncf-bias": ("nncf", {"fast_bias": False}, "openvino", {}),
    "nncf-last1": ("nncf", {"ignore_last": 1}, "openvino", {}),
    "nncf-last7": ("nncf", {"ignore_last": 7}, "openvino", {}),
    "nncf-last7-first": ("nncf", {"ignore_last": 7, "first_float": True}, "openvino", {}),
    "nncf-last7-bias": ("nncf", {"ignore_last": 7, "fast_bias": False}, "openvino", {}),
    "nncf-overflowfix": ("nncf", {"overflow": "enable"}, "openvino", {}),
    "nncf-last7-overflowfix": ("nncf", {"ignore_last": 7, "overflow": "enable"}, "openvino", {}),
    "nncf-float-s2d1": ("nncf", {"float_convs": ["stage2d/rebnconv1d"]}, "openvino", {}),
    "nncf-float-s2d1-side6": ("nncf", {"float_convs": ["stage2d/rebnconv1d", "side6"]}, "openvino", {}),
    "nncf-float-s2d1-last7": ("nncf", {"float_convs": ["stage2d/rebnconv1d"], "ignore_last": 7}, "openvino", {}),
    "nncf-float-s2d1-f32rest": ("nncf", {"float_convs": ["stage2d/rebnconv1d"]}, "openvino", {"int8_rest": "f32"}),
    "nncf-float-s2d1-bias-f32rest": ("nncf", {"float_convs": ["stage2d/rebnconv1d"], "fast_bias": False}, "openvino",
                                     {"int8_rest": "f32"}),
    "nncf-float-w5-f32rest": ("nncf", {"float_convs": ["stage2d/rebnconv1d", "stage1d/rebnconv2d", "stage2/rebnconv1",
                                                       "side6", "side5"]}, "openvino", {"int8_rest": "f32"}),
    "nncf-float-w5a5-f32rest": ("nncf", {"float_convs": ["stage2d/rebnconv1d", "stage1d/rebnconv2d", "stage2/rebnconv1",
                                                         "side6", "side5", "stage1/rebnconv2", "stage1/rebnconvin",
                                                         "stage1/rebnconv1d", "stage1d/rebnconv1d", "outconv"]},
                                "openvino", {"int8_rest": "f32"}),
    # The package's defaults (spec.int8_float_layers applied by quantize_onnx / nncf_quantize themselves).
    "pkg-qdq": ("qdq", {}, "onnxruntime", {}),
    "pkg-qdq@ov": ("qdq", {}, "openvino", {}),
    "pkg-qdq@ov-f32rest": ("qdq", {}, "openvino", {"int8_rest": "f32"}),
    "pkg-nncf": ("pkg-nncf", {}, "openvino", {}),
    "pkg-nncf-f32rest": ("pkg-nncf", {}, "openvino", {"int8_rest": "f32"}),
    "nncf-perf": ("nncf", {"preset": "performance"}, "openvino", {}),
}


def images_per_second(runtime, x: np.ndarray, seconds: float) -> float:
    runtime.run(x)
    runtime.run(x)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        runtime.run(x)
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="int8_trained_u2netp.json")
    parser.add_argument("--only", default="", help="comma-separated candidate names (default: all)")
    parser.add_argument("--calib", default="skimage-crops", help="comma-separated calibration sources")
    parser.add_argument("--num-calib", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--time-s", type=float, default=5.0, help="seconds of timing per runtime (0: skip)")
    args = parser.parse_args()
    import torch

    import trained_u2netp as tu
    from segdeploy.backends import open_runtime
    from segdeploy.convert.export_cache import cached_export
    from segdeploy.convert.nncf_quantize import nncf_quantize
    from segdeploy.convert.quantize import QuantizeOptions, calib_input, quantize_onnx
    from segdeploy.core.registry import get_spec
    from segdeploy.verify.compare import CompareOptions, compare

    torch.set_num_threads(args.threads)
    spec = get_spec("u2netp")
    module = tu.trained_u2netp()
    module.segdeploy_spec = spec
    judged = [im for _, im in tu.real_photos()[:16]]
    fp32 = cached_export(module, None, spec=spec)
    work = Path(tempfile.mkdtemp(prefix="int8-u2netp-"))
    ref = work / "reference.npz"
    compare(module, options=CompareOptions(combos=[], save_reference=ref), images=judged)
    sources = calib_sets(spec, args.num_calib)
    threads = {"threads": args.threads}
    x = calib_input(judged[0], spec)
    results = {"load_before": os.getloadavg(), "threads": args.threads, "rows": []}
    if args.time_s:
        for backend in ("onnxruntime", "openvino"):
            rt = open_runtime(module, backend=backend, precision="fp32", onnx_path=fp32, spec=spec, **threads)
            ips = images_per_second(rt, x, args.time_s)
            results[f"{backend}_fp32_ips"] = ips
            print(f"{backend} fp32: {ips:.2f} images/s", flush=True)
    best = max(results.get("onnxruntime_fp32_ips", 0), results.get("openvino_fp32_ips", 0)) or None
    only = [n for n in args.only.split(",") if n] or list(CANDIDATES)
    for calib_name in args.calib.split(","):
        inputs = sources[calib_name]
        for name in only:
            kind, opts, backend, rt_opts = CANDIDATES[name]
            t0 = time.perf_counter()
            if kind == "qdq":
                artifact = work / f"{name}-{calib_name}.onnx"
                quantize_onnx(module, None, [i[0] for i in inputs], artifact,
                              QuantizeOptions(num_calib=len(inputs), **opts), onnx_path=fp32, spec=spec)
            elif kind == "pkg-nncf":
                artifact = nncf_quantize(fp32, spec, inputs, work / f"{name}-{calib_name}.xml")
            else:
                artifact = nncf_ir(fp32, inputs, work / f"{name}-{calib_name}.xml", **opts)
            made = time.perf_counter() - t0
            rt = open_runtime(module, backend=backend, precision="int8", onnx_path=artifact, spec=spec,
                              **threads, **rt_opts)
            report = compare(module, options=CompareOptions(combos=[], reference=ref), images=judged, runtimes=[rt])
            row = report.rows[0]
            s = row.summary
            ips = images_per_second(rt, x, args.time_s) if args.time_s else None
            record = {"name": name, "calib": calib_name, "status": row.status, "failures": list(row.failures),
                      "summary": s, "quantize_s": round(made, 1), "ips": ips,
                      "ratio": (ips / best) if ips and best else None}
            results["rows"].append(record)
            print(json.dumps({k: record[k] for k in ("name", "calib", "status", "failures", "ips", "ratio")},
                             default=str), flush=True)
            print("   ", json.dumps(s, default=str)[:600], flush=True)
    results["load_after"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
