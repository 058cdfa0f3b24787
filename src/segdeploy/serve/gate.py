"""The start-up fidelity gate: the served backend/precision against the PyTorch fp32 reference.

:func:`fidelity_gate` is the one place the server talks to :mod:`segdeploy.verify`; it returns
``(passed, summary)`` so that a rewrite of the comparison changes this adapter only.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np


def check_images(count: int = 16, size: tuple[int, int] = (240, 320), seed: int = 20240611) -> list[np.ndarray]:
    """``count`` deterministic HxWx3 uint8 RGB images: a smooth two-colour background with one to
    three textured ellipses — objects on a background, as the saliency and binary models expect.
    Sizes alternate landscape / portrait / square around ``size`` so that decoding to the original
    size is exercised at several aspect ratios."""
    rng = np.random.default_rng(seed)
    base_h, base_w = size
    shapes = [(base_h, base_w), (base_w, base_h), (base_h, base_h)]
    images = []
    for index in range(count):
        h, w = shapes[index % len(shapes)]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = (xx / max(w - 1, 1))[..., None]
        image = c0 * (1 - t) + c1 * t
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
            ry, rx = rng.uniform(0.1, 0.3) * h, rng.uniform(0.1, 0.3) * w
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
            colour = rng.uniform(0, 255, 3)
            texture = rng.normal(0, 12, (h, w, 1))
            image = np.where(inside[..., None], colour + texture, image)
        image = image + rng.normal(0, 4, image.shape)
        images.append(np.clip(np.rint(image), 0, 255).astype(np.uint8))
    return images


def fidelity_gate(spec, *, weights, backend: str, precision: str, device: str = "cpu", seed: int = 0,
                  onnx_path: str | os.PathLike | None = None, images: list[np.ndarray] | None = None,
                  reference: str | os.PathLike | None = None) -> tuple[bool, dict[str, Any]]:
    """Judge ``backend``/``precision`` against PyTorch fp32 on ``images`` with the project's tolerances.

    With ``reference`` (a ``segdeploy compare --json`` report) the recorded verdict for the same
    model, weights and backend/precision is used instead of running the comparison again.

    Returns:
        (passed, summary): summary holds status, failures, reason, the gated measures and the
        number of images; it is what GET /v1/models shows as the fidelity verdict.
    """
    if reference is not None:
        return _from_reference(spec, reference, backend, precision, weights)
    from segdeploy.verify.compare import compare

    # Fewer than the gate's minimum of judged images happens only with --check-images N (tests);
    # the verdict then says so.
    few = images is not None and len(images) < 16
    # The file served is the file judged: an int8 model is never re-quantized here.
    files = {"int8_onnx": onnx_path} if precision == "int8" else {"onnx_path": onnx_path}
    report = compare(spec, weights=weights, combos=[(backend, precision)], images=images, device=device, seed=seed,
                     batch_size=4, allow_few_images=few, **files)
    row = report.rows[0]
    summary: dict[str, Any] = {
        "source": "start-up gate (segdeploy.verify.compare)",
        "reference": "torch fp32 eager cpu",
        "candidate": f"{backend} {precision} {device}",
        "status": row.status,
        "failures": list(row.failures),
        "reason": row.reason,
        "images": report.images,
        "weights": report.weights,
    }
    # the gated measures (quantiles and worst image per measure, tensor error per checked output)
    summary["measures"] = row.summary
    summary["few_images"] = report.few_images
    return row.status == "pass", summary


def _from_reference(spec, path, backend: str, precision: str, weights=None) -> tuple[bool, dict[str, Any]]:
    from segdeploy.core.errors import UsageError

    try:
        data = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError) as exc:
        raise UsageError(f"--reference {path}: cannot read a compare report ({exc}); write one with "
                         "`segdeploy compare ... --json FILE`") from exc
    if data.get("model") != spec.name:
        raise UsageError(f"--reference {path}: report is for {data.get('model')!r}, not {spec.name!r}")
    recorded = (data.get("weights") or {}).get("sha256")
    if recorded and weights is not None and os.path.isfile(str(weights)):
        from segdeploy.zoo.checkpoints import file_sha256

        if file_sha256(weights) != recorded:
            raise UsageError(f"--reference {path}: report was made with other weights (sha256 {recorded[:12]}…) "
                             f"than {weights}; compare these weights first")
    for row in data.get("rows", []):
        if row.get("backend") == backend and row.get("precision") == precision:
            return row.get("status") == "pass", {
                "source": f"reference report {path}", "status": row.get("status"),
                "failures": row.get("failures", []), "reason": row.get("reason", ""),
                "images": data.get("images"), "weights": data.get("weights")}
    raise UsageError(f"--reference {path}: no {backend} {precision} row; compare that combination first")
