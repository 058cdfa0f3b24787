"""The trained U²-Netp rebuilt from rembg's ONNX (/work/shared/weights/u2netp_rembg.onnx), and real photos.

The ONNX has BatchNorm folded into the convolutions. Its 119 Conv nodes run in the same order as
the module's Conv2d layers, so each folded (weight, bias) is copied onto the matching Conv2d and
every BatchNorm becomes the identity (weight 1, bias 0, mean 0, var 1 - eps): outputs then equal
the ONNX's to ~1e-6. Used by the threshold measurements (scripts/measure_gate.py) and the slow
trained-weights gate test; skipped where the file is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ONNX = Path(os.environ.get("SEGDEPLOY_U2NETP_ONNX", "/work/shared/weights/u2netp_rembg.onnx"))


def available() -> bool:
    return ONNX.is_file()


def trained_u2netp():
    """segdeploy's u2netp module carrying the official trained weights."""
    import onnx
    import torch
    from onnx import numpy_helper

    from segdeploy.zoo import create_model

    model = onnx.load(str(ONNX))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    module = create_model("u2netp", "random", seed=0)
    layers = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    if len(layers) != len(convs):
        raise RuntimeError(f"{len(convs)} ONNX convolutions vs {len(layers)} Conv2d layers")
    with torch.no_grad():
        for node, conv in zip(convs, layers):
            weight = inits[node.input[1]]
            if tuple(weight.shape) != tuple(conv.weight.shape):
                raise RuntimeError(f"conv {node.name}: {weight.shape} vs {tuple(conv.weight.shape)}")
            conv.weight.copy_(torch.from_numpy(weight.copy()))
            bias = inits[node.input[2]] if len(node.input) > 2 else np.zeros(weight.shape[0], np.float32)
            if conv.bias is None:
                conv.bias = torch.nn.Parameter(torch.from_numpy(bias.copy()))
            else:
                conv.bias.copy_(torch.from_numpy(bias))
        for bn in module.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.weight.fill_(1.0)
                bn.bias.zero_()
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
    # Not the random weights create_model recorded: say what they are (caches key on this record).
    from segdeploy.zoo.checkpoints import WeightsRecord, file_sha256

    module.segdeploy_weights = WeightsRecord("file", str(ONNX), file_sha256(ONNX), None, "official (rembg ONNX)")
    return module.eval()


def real_photos() -> list[tuple[str, np.ndarray]]:
    """Real photographs from scikit-image's bundled data, whole and as crops: 32 RGB images.

    The first 16 (whole images and left/top crops) are for judging, the rest (other crops) for
    int8 calibration, so the two sets never share a pixel region.
    """
    import skimage.data as data

    photos = {name: getattr(data, name)() for name in
              ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry")}
    left, right, _ = data.stereo_motorcycle()
    photos["motorcycle"] = left
    photos["camera"] = np.repeat(data.camera()[..., None], 3, axis=2)
    judge, calib = [], []
    for name, image in photos.items():
        h, w = image.shape[:2]
        judge.append((name, image))
        judge.append((f"{name}-topleft", image[: h * 2 // 3, : w * 2 // 3]))
        calib.append((f"{name}-bottomright", image[h // 3:, w // 3:]))
        calib.append((f"{name}-centre", image[h // 6: h * 5 // 6, w // 6: w * 5 // 6][:, ::-1]))
    calib[-1] = ("motorcycle-right", right)
    return judge + calib
