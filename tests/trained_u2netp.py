"""The trained U²-Netp (the package's official weights) and real photos.

The weights are ``src/segdeploy/assets/weights/u2netp_official.safetensors`` (``--weights
official``), rebuilt byte-reproducibly from rembg's published ``u2netp.onnx`` by
``scripts/make_u2netp_weights.py``; ``tests/test_official_u2netp.py`` checks them against that file
where it is present. Used by the threshold measurements (scripts/measure_gate.py) and the slow
trained-weights gate tests.
"""

from __future__ import annotations

import numpy as np


def available() -> bool:
    return True  # packaged with segdeploy


def trained_u2netp():
    """segdeploy's u2netp module carrying the official trained weights."""
    from segdeploy.zoo import create_model

    return create_model("u2netp", "official").eval()


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
