"""``--backend auto``: the fastest backend x precision whose fidelity gate passes, measured here.

For a model, its weights and this machine, :func:`choose_auto` runs a short probe:

1. the reference: PyTorch fp32 on ``GATE_IMAGES`` (16) generated photo-like images, and, for
   trained weights, the package's real photos too (``assets/photos``, resized to the gate size):
   measured on the trained U²-Netp, synthetic-calibrated int8 passes on generated images but
   fails on one of those photos, so judging generated images alone would pick it;
2. every candidate that can run here (CPU: ONNX Runtime fp32 / int8, OpenVINO fp32 / bf16 / int8
   (ONNX Runtime QDQ and NNCF), PyTorch fp32 itself; CUDA: PyTorch fp32 / fp16 / bf16) runs the
   same images and is judged by :func:`fidelity_gate` against the reference, then is timed
   (batch 1, warm-up outside the timing, median of at least 3 calls and ~``PROBE_SECONDS``);
3. the choice is the fastest candidate that passed. The table (images/s, gate measures, why a
   candidate failed or could not run) is kept on the choice, printed by ``segdeploy bench
   --backend auto`` and recorded on ``runtime.selection``.

int8 candidates are calibrated on generated images disjoint from the gate's (other seeds);
``SEGDEPLOY_AUTO_INT8=0`` leaves them out (quantizing takes minutes on 2 shared cores).

The result is cached as JSON in ``<cache>/auto/`` (``$SEGDEPLOY_CACHE`` or ``~/.cache/segdeploy``)
under a key of (model, weights identity (sha256, or random seed), machine (CPU name, physical
cores, or GPU name), library versions, device, requested precision, candidate list); a later run with the same key
reads the choice back without probing. ``SEGDEPLOY_AUTO_PROBE=0`` disables probing (tests do):
then :func:`static_choice` picks conservatively — fp32 on the fastest engine available (OpenVINO,
then ONNX Runtime, then PyTorch) on CPU, PyTorch fp16 on CUDA — because a low precision is only
chosen after its gate passed for these weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from segdeploy.backends.base import RuntimeUnavailable, get_runtime_class, physical_cores

GATE_IMAGES = 16
CALIB_IMAGES = 16
PROBE_SECONDS = 1.5
CACHE_VERSION = 5  # 2: OpenVINO streams; 3: the OpenVINO QDQ candidate is QDQ; 4: real photos judged for trained weights; 5: digests, quick choices

# Thresholds of segdeploy.verify.compare.DEFAULT_TOLERANCES at the time of writing (backends sit
# below verify in the layer contract and cannot import it). verify may install its own gate with
# set_fidelity_gate(); until then this copy is the gate.
_LOW = {"fp16": {"binary": {"mask_iou": 0.98}, "saliency": {"map_mae": 0.01, "mask_iou": 0.95},
                 "semantic": {"pixel_agreement": 0.99}},
        "bf16": {"binary": {"mask_iou": 0.98}, "saliency": {"map_mae": 0.01, "mask_iou": 0.95},
                 "semantic": {"pixel_agreement": 0.98}},
        "int8": {"binary": {"mask_iou": 0.95}, "saliency": {"map_mae": 0.02, "mask_iou": 0.90},
                 "semantic": {"pixel_agreement": 0.97}}}
_FP32_REL = 1e-4
_FP32_ATOL = 1e-6
#: masks whose union is smaller than this share of the image are judged as if it were this large
_MIN_UNION_SHARE = 0.01


@dataclass(frozen=True)
class Candidate:
    """One configuration the probe may choose. ``quantizer``: int8 only ("ort-qdq", "nncf", or
    "packaged": an IR shipped with segdeploy for these weights, :mod:`segdeploy.backends.auto_quick`)."""

    backend: str
    precision: str
    quantizer: str | None = None

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}" + (f" ({self.quantizer})" if self.quantizer else "")


@dataclass
class ProbeRow:
    """What the probe found for one candidate."""

    backend: str
    precision: str
    quantizer: str | None
    status: str  # "pass", "fail" (gate), "unavailable", "error"
    images_per_s: float | None = None
    measures: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    seconds: float = 0.0
    artifact: str | None = None
    judged: int = GATE_IMAGES  # images the gate judged (generated, plus real photos for trained weights)

    @property
    def label(self) -> str:
        return Candidate(self.backend, self.precision, self.quantizer).label


@dataclass
class AutoChoice:
    """The choice and how it was made (``source``: "probe", "cache" or "static")."""

    backend: str
    precision: str
    why: str
    source: str
    quantizer: str | None = None
    artifact: str | None = None
    table: list[ProbeRow] = field(default_factory=list)
    key: dict[str, Any] = field(default_factory=dict)
    cache_path: str | None = None
    #: how the choice was made before it was cached: "quick" (no timing: fp32, or a packaged int8
    #: artifact judged at first use) or "probe" (every candidate judged and timed)
    made_by: str | None = None
    digest: str | None = None  # sha256 of the cached content (auto_cache)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AutoChoice":
        table = [ProbeRow(**row) for row in data.get("table", [])]
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in {**data, "table": table}.items() if k in known})


# ----------------------------------------------------------------------------------------------
# The fidelity gate (one adapter: the lead rewires it to segdeploy.verify)
# ----------------------------------------------------------------------------------------------

GateFn = Callable[[Any, str, list[list[np.ndarray]], list[list[np.ndarray]], list[tuple[int, int]]],
                  tuple[bool, dict[str, float], str]]
_GATE: GateFn | None = None


def set_fidelity_gate(gate: GateFn | None) -> None:
    """Install the gate ``auto`` uses (None = the built-in one): ``gate(spec, precision, reference
    outputs, candidate outputs, original sizes) -> (passed, measures, reason)``; outputs are per
    image lists of CxHxW arrays in ``spec.output_names`` order."""
    global _GATE
    _GATE = gate


def fidelity_gate(spec, precision: str, reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]],
                  sizes: list[tuple[int, int]], ids: list[str] | None = None) -> tuple[bool, dict[str, float], str]:
    """Judge ``candidate`` against PyTorch fp32 ``reference`` outputs on the same images.

    fp32: the decoded output's largest error relative to the reference's largest magnitude must
    be ≤ 1e-4 (or its absolute error ≤ 1e-6). fp16/bf16/int8: on the decoded predictions at the
    original size, the thresholds of ``segdeploy.verify.compare`` for the task — saliency: map
    MAE (mean |map − reference map|) and pooled mask IoU (maps ≥ 0.5; union floored at 1 % of the
    image); binary: pooled mask IoU; semantic: share of pixels with the reference's class.
    """
    if _GATE is not None:
        return _GATE(spec, precision, reference, candidate, sizes, *([ids] if ids else []))
    from segdeploy.engine.transforms import decode, select_output
    from segdeploy.tasks import get_task

    measures: dict[str, float] = {}
    if precision == "fp32":
        worst_rel, worst_abs = 0.0, 0.0
        for ref, out in zip(reference, candidate):
            a = np.asarray(select_output(ref, spec), dtype=np.float64)
            b = np.asarray(select_output(out, spec), dtype=np.float64)
            err = float(np.abs(a - b).max())
            worst_abs = max(worst_abs, err)
            worst_rel = max(worst_rel, err / max(float(np.abs(a).max()), 1e-12))
        measures = {"rel": worst_rel, "max_abs": worst_abs}
        ok = worst_rel <= _FP32_REL or worst_abs <= _FP32_ATOL
        return ok, measures, "" if ok else f"rel error {worst_rel:.2e} > {_FP32_REL:g}"
    task = get_task(spec)
    limits = _LOW[precision][task.name]
    inter = union = floored = 0.0
    mae_sum = mae_count = agree = pixels = 0.0
    for ref, out, hw in zip(reference, candidate, sizes):
        p_ref, p_out = decode(ref, spec, hw), decode(out, spec, hw)
        if "mask_iou" in limits:
            # saliency maps are thresholded at 0.5; binary masks are already 0/1
            a = p_ref.map >= 0.5 if "map_mae" in limits else p_ref.mask.astype(bool)
            b = p_out.map >= 0.5 if "map_mae" in limits else p_out.mask.astype(bool)
            i, u = float((a & b).sum()), float((a | b).sum())
            inter, union, floored = inter + i, union + u, floored + max(u, _MIN_UNION_SHARE * a.size)
        if "map_mae" in limits:
            diff = np.abs(p_out.map.astype(np.float64) - p_ref.map.astype(np.float64))
            mae_sum, mae_count = mae_sum + float(diff.sum()), mae_count + diff.size
        if "pixel_agreement" in limits:
            agree, pixels = agree + float((p_ref.mask == p_out.mask).sum()), pixels + p_ref.mask.size
    failures = []
    if "mask_iou" in limits:
        measures["mask_iou"] = 1.0 - (union - inter) / floored if floored else 1.0
        if measures["mask_iou"] < limits["mask_iou"]:
            failures.append(f"mask IoU {measures['mask_iou']:.3f} < {limits['mask_iou']}")
    if "map_mae" in limits:
        measures["map_mae"] = mae_sum / max(mae_count, 1)
        if measures["map_mae"] > limits["map_mae"]:
            failures.append(f"map MAE {measures['map_mae']:.4f} > {limits['map_mae']}")
    if "pixel_agreement" in limits:
        measures["pixel_agreement"] = agree / max(pixels, 1)
        if measures["pixel_agreement"] < limits["pixel_agreement"]:
            failures.append(f"pixel agreement {measures['pixel_agreement']:.4f} < {limits['pixel_agreement']}")
    return not failures, measures, "; ".join(failures)


# ----------------------------------------------------------------------------------------------
# Generated images
# ----------------------------------------------------------------------------------------------


def generated_images(count: int, height: int, width: int, seed: int) -> list[np.ndarray]:
    """Photo-like RGB uint8 images: a smooth two-colour gradient, 1–3 filled ellipses of other
    colours (a subject with edges), mild noise. Deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    images = []
    for _ in range(count):
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = (xx / max(width - 1, 1) * rng.uniform(0.2, 1) + yy / max(height - 1, 1) * rng.uniform(0.2, 1)) / 2
        img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
            ry, rx = rng.uniform(0.1, 0.35) * height, rng.uniform(0.1, 0.35) * width
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
            img[inside] = rng.uniform(0, 255, 3)
        img += rng.normal(0, 6, img.shape)
        images.append(np.clip(img, 0, 255).astype(np.uint8))
    return images


def judged_description(count: int) -> str:
    extra = count - GATE_IMAGES
    return f"{GATE_IMAGES} generated images" + (f" and {extra} real photos" if extra > 0 else "")


def bundled_photos(height: int, width: int) -> list[np.ndarray]:
    """The package's real photographs (``assets/photos``, CC0 / public domain) as RGB uint8 at
    (height, width); empty when they are not installed."""
    from importlib import resources

    from PIL import Image

    folder = resources.files("segdeploy") / "assets" / "photos"
    photos = []
    try:
        entries = sorted(folder.iterdir(), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        if entry.name.lower().endswith((".jpg", ".jpeg", ".png")):
            with entry.open("rb") as fh, Image.open(fh) as img:
                rgb = img.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
                photos.append(np.asarray(rgb, dtype=np.uint8).copy())
    return photos


def photo_crops(photo: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Three crops of one photograph, each a different framing of it: top-left and bottom-right
    two thirds, and the centre half."""
    h, w = photo.shape[:2]
    return [("topleft", photo[: h * 2 // 3, : w * 2 // 3]), ("bottomright", photo[h // 3:, w // 3:]),
            ("centre", photo[h // 4: h * 3 // 4, w // 4: w * 3 // 4])]


def held_out_photos() -> list[tuple[str, np.ndarray]]:
    """The images the packaged int8 artifacts and the demo are judged on: each packaged photograph
    (``assets/photos``) whole and as :func:`photo_crops` — 20 named RGB uint8 images at native size
    (none of them was used to calibrate a packaged artifact). Empty without the photographs."""
    from importlib import resources

    from PIL import Image

    folder = resources.files("segdeploy") / "assets" / "photos"
    out: list[tuple[str, np.ndarray]] = []
    try:
        entries = sorted(folder.iterdir(), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        if entry.name.lower().endswith((".jpg", ".jpeg", ".png")):
            with entry.open("rb") as fh, Image.open(fh) as img:
                photo = np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
            stem = entry.name.rsplit(".", 1)[0]
            out.append((stem, photo))
            out.extend((f"{stem}-{name}", crop) for name, crop in photo_crops(photo))
    return out


def _gate_size(spec) -> tuple[int, int]:
    """Original (H, W) of the generated images: 3:4 photos; small for native-size models."""
    if spec.preprocess.size is not None:
        h, w = spec.preprocess.size
        return max(32, h * 3 // 4), max(32, w)
    return 192, 256


# ----------------------------------------------------------------------------------------------
# Cache key and static choice
# ----------------------------------------------------------------------------------------------


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out = {}
    for name in ("segdeploy", "torch", "onnxruntime", "openvino", "nncf", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine_identity(device: str) -> dict[str, Any]:
    """What makes timings of one machine comparable: CPU name and physical cores, or the GPU name."""
    from segdeploy.core.environment import cpu_name, gpu_info

    ident: dict[str, Any] = {"cpu": cpu_name(), "cores": physical_cores(), "machine": platform.machine()}
    if str(device).startswith("cuda"):
        gpu = gpu_info()
        ident["gpu"] = gpu["name"] if gpu else None
    return ident


def probe_key(spec, weights_id: str, device: str, precision: str | None) -> dict[str, Any]:
    return {"version": CACHE_VERSION, "model": spec.name, "weights": weights_id, "device": str(device),
            "precision": precision, "machine": machine_identity(device), "libraries": _versions(),
            "candidates": [c.label for c in candidates_for(device, precision)]}


def cache_path_for(key: dict[str, Any]) -> Path:
    from segdeploy.convert.export_cache import cache_dir

    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cache_dir() / "auto" / f"{key['model']}-{digest}.json"


def probing_enabled() -> bool:
    return os.environ.get("SEGDEPLOY_AUTO_PROBE", "1").strip().lower() not in ("0", "false", "no", "off")


def auto_options(backend: str, device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    """Backend options ``auto`` opens its choice with (and probes it with).

    OpenVINO on a CPU with several cores: one stream per physical core (``streams``), so that the
    pipeline keeps that many images in flight and a core busy with JPEG decoding or PNG encoding
    stalls one stream rather than every layer of one shared forward pass (measured on the 2-core
    EPYC, u2netp int8 end to end: 4.5 → 5.9-6.6 images/s). ``threads`` (a caller's thread limit,
    e.g. a Ray worker's CPUs) caps the streams: one thread per stream at least.
    """
    cores = physical_cores() if threads is None else min(physical_cores(), max(1, int(threads)))
    if backend == "openvino" and not str(device).startswith("cuda") and cores > 1:
        return {"streams": cores}
    return {}


def static_choice(device: str = "cpu", precision: str | None = None) -> AutoChoice:
    """The conservative choice without a probe: fp32 (or the precision asked) on the first engine
    that can run it — OpenVINO, ONNX Runtime, PyTorch on CPU; PyTorch (fp16) on CUDA."""
    if str(device).startswith("cuda"):
        want = precision or "fp16"
        get_runtime_class("torch").check(device, want, {})
        return AutoChoice("torch", want, f"on CUDA segdeploy runs PyTorch ({want}); probing is off", "static")
    want = precision or "fp32"
    for backend in ("openvino", "onnxruntime", "torch"):
        try:
            get_runtime_class(backend).check(device, want, {})
        except (RuntimeUnavailable, ValueError):
            continue
        if want == "int8" and backend == "torch":
            continue
        return AutoChoice(backend, want, f"{backend} {want}: the fastest engine here for {want} without a probe "
                          "(probing is off, so no lower precision is chosen unjudged)", "static")
    raise RuntimeUnavailable(f"no backend can run {want} on {device}")


def candidates_for(device: str, precision: str | None) -> list[Candidate]:
    """Configurations worth probing on ``device`` (those that cannot run here are reported, not tried)."""
    if str(device).startswith("cuda"):
        out = [Candidate("torch", p) for p in ("fp32", "fp16", "bf16")]
    else:
        out = [Candidate("torch", "fp32"), Candidate("onnxruntime", "fp32"), Candidate("openvino", "fp32"),
               Candidate("openvino", "bf16"), Candidate("onnxruntime", "int8", "ort-qdq"),
               Candidate("openvino", "int8", "ort-qdq"), Candidate("openvino", "int8", "nncf"),
               Candidate("openvino", "int8", "packaged")]
        if os.environ.get("SEGDEPLOY_AUTO_INT8", "1").strip() in ("0", "false", "no", "off"):
            out = [c for c in out if c.precision != "int8"]
    if precision is not None:
        out = [c for c in out if c.precision == precision]
    return out
