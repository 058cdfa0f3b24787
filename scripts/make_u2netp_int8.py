"""Build the packaged int8 OpenVINO IR of the trained U²-Netp and judge it on held-out photos.

    PYTHONPATH=src python scripts/make_u2netp_int8.py [-o src/segdeploy/assets/int8]

Calibration: 16 crops of scikit-image photographs that are *not* among the packaged ones
(rocket, cat, immunohistochemistry, the stereo motorcycle pair, retina, coins), so the
judged images share no photograph with it. Quantizer: NNCF (``convert.nncf_quantize``) with the
model's ``int8_float_layers`` (``stage2d.rebnconv1d``) kept float and NNCF's overflow fix on
(7-bit weights), which is correct on every x86 CPU, with or without VNNI.

Judged: :func:`segdeploy.backends.auto.held_out_photos` (the 5 packaged photographs whole and
3 crops each = 20 images) against PyTorch fp32, with the gate of ``segdeploy compare``
(:mod:`segdeploy.engine.fidelity`), float layers run in f32. The IR, its sidecar and a
provenance file (weights and artifact sha256, calibration list, gate result, versions) are
written to the output folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CALIB_PHOTOS = ("rocket", "cat", "immunohistochemistry", "motorcycle-left", "motorcycle-right", "retina", "coins")


def calibration_images() -> list[tuple[str, np.ndarray]]:
    import skimage.data as data

    from segdeploy.backends.auto import photo_crops

    left, right, _ = data.stereo_motorcycle()
    photos = {"rocket": data.rocket(), "cat": data.cat(), "immunohistochemistry": data.immunohistochemistry(),
              "motorcycle-left": left, "motorcycle-right": right, "retina": data.retina(),
              "coins": np.repeat(data.coins()[..., None], 3, axis=2)}
    out = []
    for name in CALIB_PHOTOS:
        crops = dict(photo_crops(np.ascontiguousarray(photos[name][..., :3]).astype(np.uint8)))
        out += [(f"{name}-topleft", crops["topleft"]), (f"{name}-bottomright", crops["bottomright"])]
        if name in ("rocket", "cat"):
            out.append((f"{name}-centre", crops["centre"]))
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", default="src/segdeploy/assets/int8")
    parser.add_argument("--overflow-fix", default="enable", choices=("enable", "first_layer_only", "disable"))
    parser.add_argument("--float-last", type=int, default=0, help="also keep the last N convolutions float")
    args = parser.parse_args()
    os.environ.setdefault("SEGDEPLOY_CACHE", tempfile.mkdtemp(prefix="segdeploy-int8-"))
    from segdeploy.backends import open_runtime
    from segdeploy.backends.auto import held_out_photos
    from segdeploy.convert.export_cache import cached_export
    from segdeploy.convert.fingerprints import library_versions
    from segdeploy.convert.nncf_quantize import nncf_quantize
    from segdeploy.convert.quantize import calib_input
    from segdeploy.engine.transforms import preprocess_with_valid
    from segdeploy.engine.fidelity import fidelity_gate as auto_gate
    from segdeploy.zoo import create_model

    module = create_model("u2netp", "official").eval()
    spec = module.segdeploy_spec
    weights_sha = module.segdeploy_weights.to_dict()["sha256"]
    calib = calibration_images()
    t0 = time.perf_counter()
    onnx = cached_export(module, spec=spec)
    out_dir = Path(args.out)
    xml = out_dir / "u2netp_official_nncf.xml"
    nncf_quantize(onnx, spec, [calib_input(image, spec) for _, image in calib], xml, overflow_fix=args.overflow_fix,
                  ignore_last=args.float_last, metadata={"weights_sha256": weights_sha})
    seconds = time.perf_counter() - t0
    judged = held_out_photos()
    batches, sizes = [], []
    for _, image in judged:
        chw, _ = preprocess_with_valid(image, spec)
        batches.append(chw[None])
        sizes.append(image.shape[:2])
    reference_rt = open_runtime(module, backend="torch", precision="fp32")
    int8_rt = open_runtime(module, backend="openvino", precision="int8", onnx_path=xml)
    reference = [[np.asarray(o[0]) for o in reference_rt.run(x)] for x in batches]
    candidate = [[np.asarray(o[0]) for o in int8_rt.run(x)] for x in batches]
    passed, measures, reason = auto_gate(spec, "int8", reference, candidate, sizes,
                                                      ids=[name for name, _ in judged])
    provenance = {
        "artifact": xml.name, "xml_sha256": sha256(xml), "bin_sha256": sha256(xml.with_suffix(".bin")),
        "model": spec.name, "weights": "official", "weights_sha256": weights_sha,
        "quantizer": "nncf", "overflow_fix": args.overflow_fix, "float_last_convs": args.float_last, "float_layers": list(spec.int8_float_layers),
        "int8_rest": "f32",
        "calibration": {"source": "scikit-image sample data (not among the packaged photographs)",
                        "images": [name for name, _ in calib]},
        "gate": {"passed": bool(passed), "measures": measures, "reason": reason,
                 "judged": [name for name, _ in judged],
                 "rule": "segdeploy.verify.gate default int8 gate (quantile + worst image), PyTorch fp32 reference"},
        "made_with": "PYTHONPATH=src python scripts/make_u2netp_int8.py", "seconds": round(seconds, 1),
        "libraries": library_versions(), "python": sys.version.split()[0],
    }
    (out_dir / "u2netp_official_nncf.provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(json.dumps(provenance["gate"], indent=2))
    return 0 if passed else 3


if __name__ == "__main__":
    sys.exit(main())
