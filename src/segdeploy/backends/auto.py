"""``--backend auto``: the fastest backend x precision whose fidelity gate passes, measured here.

For a model, its weights and this machine, :func:`choose_auto` runs a short probe:

1. the reference: PyTorch fp32 on ``GATE_IMAGES`` (16) generated photo-like images, and, for
   trained weights, the package's real photos too (``assets/photos``, resized to the gate size):
   measured on the trained U²-Netp, synthetic-calibrated int8 passes on generated images but
   fails on one of those photos, so judging generated images alone would pick it;
2. every candidate that can run here (CPU: ONNX Runtime fp32 / int8, OpenVINO fp32 / bf16 / int8
   (ONNX Runtime QDQ and NNCF), PyTorch fp32 itself; CUDA: PyTorch fp32 / fp16 / bf16) runs the
   same images and is judged by :func:`segdeploy.engine.fidelity.fidelity_gate` against the reference, then is timed
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
from typing import Any

import numpy as np

from segdeploy.backends.base import (RuntimeUnavailable, backend_names, by_preference, get_runtime_class,
                                    module_backends, physical_cores)

GATE_IMAGES = 16
CALIB_IMAGES = 16
PROBE_SECONDS = 1.5
CACHE_VERSION = 5  # 2: OpenVINO streams; 3: the OpenVINO QDQ candidate is QDQ; 4: real photos judged for trained weights; 5: digests, quick choices



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


def auto_options(backend: str, device: str = "cpu", threads: int | None = None, *, spec=None,
                 precision: str | None = None) -> dict[str, Any]:
    """Backend options ``auto`` opens its choice with (and probes it with): the backend's own."""
    return get_runtime_class(backend).auto_options(device, threads, spec=spec, precision=precision)


def static_choice(device: str = "cpu", precision: str | None = None) -> AutoChoice:
    """The conservative choice without a probe: fp32 (or the precision asked) on the first engine
    that can run it — OpenVINO, ONNX Runtime, PyTorch on CPU; PyTorch (fp16) on CUDA."""
    if str(device).startswith("cuda"):
        want = precision or "fp16"
        reference = module_backends()[0]
        get_runtime_class(reference).check(device, want, {})
        return AutoChoice(reference, want, f"on CUDA segdeploy runs PyTorch ({want}); probing is off", "static")
    want = precision or "fp32"
    for backend in by_preference():
        try:
            get_runtime_class(backend).check(device, want, {})
        except (RuntimeUnavailable, ValueError):
            continue
        return AutoChoice(backend, want, f"{backend} {want}: the fastest engine here for {want} without a probe "
                          "(probing is off, so no lower precision is chosen unjudged)", "static")
    raise RuntimeUnavailable(f"no backend can run {want} on {device}")


def candidates_for(device: str, precision: str | None) -> list[Candidate]:
    """Configurations worth probing on ``device`` (those that cannot run here are reported, not tried)."""
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    out = [Candidate(name, p, q) for name in backend_names()  # what each declares (Runtime.auto_candidates)
           for p, q in get_runtime_class(name).auto_candidates.get(kind, ())]
    if kind == "cpu":
        if os.environ.get("SEGDEPLOY_AUTO_INT8", "1").strip() in ("0", "false", "no", "off"):
            out = [c for c in out if c.precision != "int8"]
    if precision is not None:
        out = [c for c in out if c.precision == precision]
    return out
