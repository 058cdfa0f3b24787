"""Measure the fidelity gate on the trained U²-Netp with real photos (the numbers behind docs/verification.md).

Throw-away measurement, kept so that the table can be re-checked: builds the official U²-Netp from
rembg's ONNX (tests/trained_u2netp.py), judges 16 real photos (scikit-image's bundled data, whole
and cropped) with segdeploy.verify.compare for every backend x precision; int8 is calibrated on 16
other crops. Two fault injections run as candidates too: preprocessing that resizes with nearest
instead of bilinear, and fp16 run on inputs scaled past fp16's range. Writes the full report.

    OMP_NUM_THREADS=1 PYTHONPATH=src:tests python scripts/measure_gate.py --out measure.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="measure.json")
    parser.add_argument("--combos", default="onnxruntime:fp32,openvino:fp32,torch:bf16,openvino:bf16,"
                                            "onnxruntime:int8,openvino:int8")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument("--images", type=int, default=16, help="judged images (fewer: --allow-few-images)")
    args = parser.parse_args()
    import torch

    import trained_u2netp as tu
    from segdeploy.backends import open_runtime
    from segdeploy.core.registry import get_spec
    from segdeploy.verify.compare import CompareOptions, compare

    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    started = time.time()
    module = tu.trained_u2netp()
    module.segdeploy_spec = get_spec("u2netp")
    photos = tu.real_photos()
    judge, calib = photos[:args.images], photos[16:]
    spec = get_spec("u2netp")
    runtimes = []
    if not args.no_faults:
        # U²-Net's skimage convention is bilinear only: the fault is PIL nearest instead.
        nearest = dataclasses.replace(spec, preprocess=dataclasses.replace(spec.preprocess, interpolation="nearest",
                                                                           resize_library="pil"))
        runtimes.append(open_runtime(module, backend="torch", precision="fp32", spec=nearest))
    combos = [tuple(c.split(":")) for c in args.combos.split(",") if c]
    threads = {b: {"threads": args.threads} for b in ("torch", "onnxruntime", "openvino")}
    options = CompareOptions(combos=combos, calib=[im for _, im in calib], num_calib=len(calib),
                             runtime_options=threads, allow_few_images=args.images < 16)
    report = compare(module, options=options, images=[im for _, im in judge], runtimes=runtimes, progress=print)
    report.render()
    data = report.to_dict()
    data["names"] = [name for name, _ in judge]
    data["load"] = {"before": load0, "after": os.getloadavg(), "seconds": round(time.time() - started, 1)}
    print("load average before/after", load0, os.getloadavg(), "— contended" if max(load0) > 2 else "")
    with open(args.out, "w") as handle:
        json.dump(data, handle, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
