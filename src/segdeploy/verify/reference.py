"""References that travel: fp32 reference outputs saved with what they were computed from.

``segdeploy compare --save-reference REF.npz`` stores, per judged image, the PyTorch fp32 outputs
that the gate checks (:func:`segdeploy.engine.fidelity.checked_outputs`), the image's id (sha256 of
its decoded RGB pixels and shape, so a re-encoded copy or another file name is still recognised),
its original and valid sizes, and the fingerprints of the weights (sha256 of the state_dict) and of
the preprocessing + decoding (sha256 of the spec's Preprocess, Decode and output names).
``--reference REF.npz`` judges a backend against that file in another process or on another
machine: a reference from other weights or another preprocessing is refused, naming which differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segdeploy.core.errors import UsageError

FORMAT = "segdeploy-reference/1"


def image_id(image: np.ndarray) -> str:
    """sha256 of an image's decoded pixels and shape (file name and encoding do not matter)."""
    array = np.ascontiguousarray(image)
    digest = hashlib.sha256(f"{array.shape}:{array.dtype};".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def preprocessing_fingerprint(spec) -> str:
    """sha256 of what turns an image into network input and outputs into masks."""
    data = {"preprocess": dataclasses.asdict(spec.preprocess), "decode": dataclasses.asdict(spec.decode),
            "outputs": list(spec.output_names)}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def weights_fingerprint(module) -> str:
    """sha256 over the module's state_dict (names, shapes, dtypes, bytes)."""
    from segdeploy.convert.fingerprints import state_dict_digest

    return state_dict_digest(module)


@dataclass
class ReferenceImage:
    """One image of a reference: its id, sizes and checked outputs (no batch axis)."""

    id: str
    name: str
    original_hw: tuple[int, int]
    valid_hw: tuple[int, int] | None
    outputs: dict[str, np.ndarray]


@dataclass
class Reference:
    """Reference outputs and the identity of what produced them."""

    model: str
    weights: str
    preprocessing: str
    outputs: list[str]
    images: list[ReferenceImage] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def by_id(self) -> dict[str, ReferenceImage]:
        return {im.id: im for im in self.images}

    def check_matches(self, spec, weights: str, path: str | os.PathLike = "reference") -> None:
        """UsageError naming what differs when this reference was not made for ``spec`` + ``weights``."""
        differs = []
        if self.model != spec.name:
            differs.append(f"model ({self.model} in the reference, {spec.name} here)")
        if self.weights != weights:
            differs.append(f"weights (sha256 {self.weights[:12]}… in the reference, {weights[:12]}… here)")
        if self.preprocessing != preprocessing_fingerprint(spec):
            differs.append("preprocessing/decoding (the spec's Preprocess or Decode differs, e.g. another "
                           "--input-size)")
        if differs:
            raise UsageError(f"{path}: this reference was made with other {' and '.join(differs)}; make a "
                             "reference from the same weights and preprocessing with compare --save-reference")

    def save(self, path: str | os.PathLike) -> Path:
        """Write an .npz atomically (temp file in the same folder, fsync, rename)."""
        path = Path(path)
        meta = {"format": FORMAT, "model": self.model, "weights": self.weights, "preprocessing": self.preprocessing,
                "outputs": self.outputs, **self.meta,
                "images": [{"id": im.id, "name": im.name, "original_hw": list(im.original_hw),
                            "valid_hw": list(im.valid_hw) if im.valid_hw else None} for im in self.images]}
        arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
        for index, im in enumerate(self.images):
            for name in self.outputs:
                arrays[f"{index}/{name}"] = np.asarray(im.outputs[name], dtype=np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez_compressed(handle, **arrays)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Reference":
        """Read a reference written by :meth:`save` (UsageError when the file is not one)."""
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"{path}: no such reference file (make one with compare --save-reference)")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                if meta.get("format") != FORMAT:
                    raise ValueError(f"format {meta.get('format')!r}")
                images = [ReferenceImage(entry["id"], entry["name"], tuple(entry["original_hw"]),
                                         tuple(entry["valid_hw"]) if entry["valid_hw"] else None,
                                         {name: data[f"{index}/{name}"] for name in meta["outputs"]})
                          for index, entry in enumerate(meta["images"])]
        except Exception as exc:  # noqa: BLE001 - whatever a damaged file makes numpy / zipfile / json raise
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise UsageError(f"{path}: not a segdeploy reference, or a damaged one ({reason})") from None
        extra = {k: v for k, v in meta.items()
                 if k not in ("format", "model", "weights", "preprocessing", "outputs", "images")}
        return cls(meta["model"], meta["weights"], meta["preprocessing"], list(meta["outputs"]), images, extra)
