"""The start-up fidelity gate: the served backend/precision against the PyTorch fp32 reference.

:func:`fidelity_gate` is the one place the server talks to :mod:`segdeploy.verify`. What it
judges is what decides whether a model is served as VERIFIED, and VERIFIED means one thing
(:func:`acceptance`): a passed gate

* on the artifact served (the sha256 of the ONNX / IR file the runtime runs, or the weights'
  state_dict fingerprint for the PyTorch backend),
* with these weights and this preprocessing (their fingerprints),
* over at least :data:`~segdeploy.engine.gate.MIN_IMAGES` images named by their pixel digests,
  real photos among them for trained weights (the packaged ones, or ``--check-images DIR``),
* under the default thresholds (a report made with loosened ``--tolerance`` is marked, never
  VERIFIED).

A ``--reference`` report is held to the same rules; one that misses any of them does not verify.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from segdeploy.engine.gate import MIN_IMAGES


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


def packaged_photo_files() -> list[Path]:
    """The package's photographs (``segdeploy/assets/photos``, CC0 / public domain), sorted."""
    from importlib import resources

    folder = Path(str(resources.files("segdeploy").joinpath("assets", "photos")))
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


#: crops of each packaged photo judged besides the whole photo: (top, left, height, width) shares
PHOTO_CROPS = ((0.15, 0.15, 0.7, 0.7), (0.0, 0.0, 0.6, 0.6), (0.4, 0.4, 0.6, 0.6))


def photo_checks() -> list[tuple[str, np.ndarray]]:
    """Each packaged photo whole and in three crops (5 photos: 20 images), named ``photo:FILE[#k]``."""
    from segdeploy.engine.images import read_image

    checks = []
    for path in packaged_photo_files():
        image = read_image(path)
        checks.append((f"photo:{path.name}", image))
        h, w = image.shape[:2]
        for k, (top, left, height, width) in enumerate(PHOTO_CROPS, 1):
            y, x = int(top * h), int(left * w)
            checks.append((f"photo:{path.name}#{k}", np.ascontiguousarray(image[y:y + int(height * h),
                                                                              x:x + int(width * w)])))
    return checks


def folder_checks(folder: str | os.PathLike) -> list[tuple[str, np.ndarray]]:
    """The images of ``folder`` (``--check-images DIR``), named by their path inside it."""
    from segdeploy.core.errors import UsageError
    from segdeploy.engine.finder import find_images
    from segdeploy.engine.images import read_image

    found = find_images([folder])
    if not found:
        raise UsageError(f"--check-images {folder}: no images found")
    return [(str(Path(path).relative_to(folder)) if Path(path).is_relative_to(folder) else Path(path).name,
             read_image(path)) for path, _ in found]


def check_set(check: int | str, size: tuple[int, int], trained: bool) -> list[tuple[str, np.ndarray]]:
    """The start-up gate's images: a folder's, or ``check`` built-in ones — for trained weights the
    packaged photos and their crops first, generated images only to reach ``check``."""
    if isinstance(check, str):
        return folder_checks(check)
    photos = photo_checks() if trained else []
    generated = check_images(max(0, int(check) - len(photos)), tuple(size))
    return photos + [(f"generated:{i}", image) for i, image in enumerate(generated)]


def required_photo_ids(check: int | str, trained: bool) -> set[str]:
    """Pixel digests of the photos a verdict on trained weights must include: the packaged photos
    (whole, as ``segdeploy compare`` reads the files), or every image of ``--check-images DIR``."""
    from segdeploy.verify.reference import image_id

    if not trained:
        return set()
    if isinstance(check, str):
        return {image_id(image) for _, image in folder_checks(check)}
    from segdeploy.engine.images import read_image

    return {image_id(read_image(path)) for path in packaged_photo_files()}


def fidelity_gate(spec, *, weights, backend: str, precision: str, device: str = "cpu", seed: int = 0,
                  onnx_path: str | os.PathLike | None = None, images: list | None = None) -> dict[str, Any]:
    """Judge ``backend``/``precision`` against PyTorch fp32 on ``images`` ((name, array) pairs) with
    the default thresholds; the summary names what :func:`acceptance` checks."""
    from segdeploy.verify.compare import CompareOptions, compare
    from segdeploy.verify.reference import image_id, preprocessing_fingerprint

    few = images is not None and len(images) < MIN_IMAGES
    # The file served is the file judged: an int8 model is never re-quantized here.
    files = {"int8_onnx": onnx_path} if precision == "int8" else {"onnx_path": onnx_path}
    options = CompareOptions(combos=[(backend, precision)], device=device, seed=seed, batch_size=4,
                             allow_few_images=few, **files)
    report = compare(spec, weights=weights, options=options, images=images)
    row = report.rows[0]
    return {
        "source": "start-up gate (segdeploy.verify.compare)",
        "reference": "torch fp32 eager cpu",
        "candidate": f"{backend} {precision} {device}",
        "status": row.status,
        "failures": list(row.failures),
        "reason": row.reason,
        "images": report.images,
        "judged": [{"name": r.get("id"), "image_id": r.get("image_id")} for r in row.images],
        "weights": report.weights,
        "preprocessing": report.reference.get("preprocessing"),
        "artifact": row.artifact or None,
        "default_thresholds": True,
        # the gated measures (quantiles and worst image per measure, tensor error per checked output)
        "measures": row.summary,
        "few_images": report.few_images,
        "expected_ids": [image_id(image) for _, image in images] if images is not None else None,
        "preprocessing_expected": preprocessing_fingerprint(spec),
    }


def from_reference(spec, path, backend: str, precision: str) -> dict[str, Any]:
    """The summary of a ``segdeploy compare --json`` report's row for ``backend``/``precision``, in
    the form :func:`acceptance` judges (what the report does not name stays missing)."""
    from segdeploy.core.errors import UsageError
    from segdeploy.engine.gate import default_gate

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--reference {path}: cannot read a compare report ({exc}); write one with "
                         "`segdeploy compare ... --json FILE`") from exc
    if not isinstance(data, dict):
        raise UsageError(f"--reference {path}: not a compare report (a JSON object)")
    if data.get("model") != spec.name:
        raise UsageError(f"--reference {path}: report is for {data.get('model')!r}, not {spec.name!r}")
    row = next((r for r in data.get("rows") or [] if isinstance(r, dict) and r.get("backend") == backend
                and r.get("precision") == precision), None)
    if row is None:
        raise UsageError(f"--reference {path}: no {backend} {precision} row; compare that combination first")
    judged = [i for i in row.get("images") or [] if isinstance(i, dict)]
    default = default_gate(spec.task, precision).to_dict()
    return {
        "source": f"reference report {Path(path).name}", "status": row.get("status"),
        "failures": row.get("failures", []), "reason": row.get("reason", ""), "images": data.get("images"),
        "judged": [{"name": i.get("id"), "image_id": i.get("image_id")} for i in judged],
        "weights": data.get("weights"), "preprocessing": (data.get("reference") or {}).get("preprocessing"),
        "artifact": row.get("artifact") or None,
        "default_thresholds": _same_numbers(row.get("gate"), default),
        "few_images": bool(data.get("few_images")),
    }


def _same_numbers(recorded, default) -> bool:
    """The recorded gate equals the default one (JSON round trip: tuples are lists)."""
    return recorded is not None and json.loads(json.dumps(recorded)) == json.loads(json.dumps(default))


def acceptance(summary: dict[str, Any], *, weights_fp: str, preprocessing_fp: str, artifact_sha256: str | None,
               required_ids: set[str], expected_ids: set[str] | None = None) -> list[str]:
    """Why ``summary`` does not verify the model served (empty: it does).

    Args:
        weights_fp: state_dict fingerprint of the served weights.
        preprocessing_fp: the spec's preprocessing fingerprint.
        artifact_sha256: sha256 of the file the runtime runs (None for the PyTorch backend).
        required_ids: pixel digests that must be among the judged images (real photos).
        expected_ids: digests the gate was given (the start-up gate: all must have been judged).
    """
    why = []
    if summary.get("status") != "pass":
        detail = "; ".join(list(summary.get("failures") or [])[:3]) or summary.get("reason") or ""
        why.append(f"the gate did not pass ({summary.get('status')}{': ' + detail if detail else ''})")
    if not summary.get("default_thresholds"):
        why.append("judged under thresholds other than the defaults (loosened --tolerance, or not recorded)")
    if ((summary.get("weights") or {}).get("state_dict_sha256")) != weights_fp:
        why.append("does not name the served weights' fingerprint (state_dict sha256)")
    if summary.get("preprocessing") != preprocessing_fp:
        why.append("does not name this model's preprocessing fingerprint")
    if artifact_sha256 is not None and (summary.get("artifact") or {}).get("sha256") != artifact_sha256:
        why.append(f"does not name the served artifact (sha256 {artifact_sha256[:12]}…)")
    ids = {j.get("image_id") for j in summary.get("judged") or [] if j.get("image_id")}
    if len(ids) < MIN_IMAGES:
        why.append(f"names {len(ids)} judged images, fewer than {MIN_IMAGES}")
    if summary.get("few_images"):
        why.append("was made with --allow-few-images")
    if required_ids - ids:
        why.append(f"misses {len(required_ids - ids)} of the {len(required_ids)} real photos trained weights are "
                   "judged on (the packaged photos, or --check-images DIR)")
    if expected_ids is not None and expected_ids - ids:
        why.append(f"{len(expected_ids - ids)} check images were not judged")
    return why
