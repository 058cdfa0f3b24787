"""Where predict's outputs go and what they are made of: output paths (distinct, never an input),
output encoding by suffix, and the identity of the weights a run uses (for the manifest)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from segdeploy.core.errors import UsageError
from segdeploy.engine.finder import IMAGE_SUFFIXES
from segdeploy.engine.writers import encode_png


def plan_outputs(inputs: list[tuple[Path, Path]], out_dir: Path) -> list[Path]:
    """``OUT/<relative path>/<stem>.png`` per input; inputs sharing a stem in one folder keep their
    suffix (``a.jpg`` + ``a.png`` → ``a.jpg.png``, ``a.png.png``).

    Raises:
        UsageError: two inputs would get the same output, or an output would replace an input file.
    """
    stems: dict[Path, int] = {}
    for _, rel in inputs:
        key = rel.parent / rel.stem
        stems[key] = stems.get(key, 0) + 1
    paths: list[Path] = []
    owner: dict[str, Path] = {}
    sources = {os.path.realpath(path): path for path, _ in inputs}
    # a hard link has its own path: only the device and inode say that two names are one file
    inodes = {ident: path for path, _ in inputs if (ident := file_identity(path)) is not None}
    for path, rel in inputs:
        key = rel.parent / rel.stem
        name = rel.stem if stems[key] == 1 else rel.name
        target = out_dir / rel.parent / f"{name}.png"
        ident = os.path.normcase(os.path.abspath(target))
        if ident in owner:
            raise UsageError(f"{owner[ident]} and {path} would both be written to {target}; rename one, or predict "
                             "them in two runs with different -o folders. Nothing was written.")
        owner[ident] = path
        real = os.path.realpath(target)
        same = sources.get(real) or inodes.get(file_identity(target))
        if same is not None:
            raise UsageError(f"the mask of {path} would replace the input {same}; choose an -o folder "
                             "outside the inputs. Nothing was written.")
        paths.append(target)
    return paths


def file_identity(path) -> tuple[int, int] | None:
    """(device, inode) of the file ``path`` names, through symlinks; None when there is none."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def refuse_aliased_output(source, targets) -> None:
    """UsageError when any of ``targets`` is the file ``source`` under another name (the same path,
    a symlink or a hard link to it): writing it would destroy the input."""
    ident = file_identity(source)
    for target in targets:
        if ident is not None and file_identity(target) == ident:
            raise UsageError(f"-o {target} is the input {source} (same file"
                             + ("" if os.path.abspath(target) == os.path.abspath(source) else
                                ", through a link") + "); writing it would replace the photo. Choose another "
                             "output file. Nothing was written.")


def is_single_file_output(inputs: list[str], output: str) -> bool:
    """True for ``predict MODEL IN -o OUT.png`` or ``-o -``: one input file (or stdin), one output file."""
    if len(inputs) != 1:
        return False
    source = inputs[0]
    if source != "-" and (os.path.isdir(source) or not os.path.lexists(source)):
        return False
    return output == "-" or Path(output).suffix.lower() in IMAGE_SUFFIXES


def encode_output(array: np.ndarray, palette: list[int] | None, suffix: str, target: str) -> bytes:
    """Encode a mask or cut-out in the format its file suffix names (PNG for stdout)."""
    if suffix == ".png":
        return encode_png(array, palette)
    from PIL import Image

    formats = {".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}
    if suffix not in formats:
        raise UsageError(f"-o {target}: unknown image suffix {suffix!r}; use one of {', '.join(IMAGE_SUFFIXES)}")
    image = Image.fromarray(np.ascontiguousarray(array))
    if palette is not None:
        image = image.convert("P")
        image.putpalette(palette)
    fmt = formats[suffix]
    if image.mode == "RGBA" and fmt in ("JPEG", "BMP"):
        if array[..., 3].min() < 255:
            raise UsageError(f"-o {target}: {fmt} has no transparency for a cut-out; use .png or .webp, "
                             "or fill the background with --bgcolor R,G,B")
        image = image.convert("RGB")
    if image.mode == "P" and fmt == "JPEG":
        image = image.convert("RGB")
    buffer = io.BytesIO()
    options = {"quality": 95} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def weights_identity(spec, weights, seed: int, onnx_path=None, calib=None, runtime=None) -> dict[str, Any]:
    """What identifies the numbers a run computes with: file sha256, random seed, ONNX file, calibration."""
    from segdeploy.zoo.checkpoints import RANDOM, file_sha256, resolve_weights

    if runtime is not None:
        record = getattr(runtime, "weights", None) or getattr(runtime, "weights_record", None)
        if record is None and hasattr(runtime, "describe"):
            record = (runtime.describe() or {}).get("weights")
        record = record.to_dict() if hasattr(record, "to_dict") else dict(record or {})
        return {"kind": record.get("kind", "runtime"), "sha256": record.get("sha256"), "seed": record.get("seed")}
    identity: dict[str, Any]
    if onnx_path is not None:
        identity = {"kind": "onnx", "sha256": file_sha256(onnx_path)}
    else:
        resolved = resolve_weights(spec, weights)
        if str(resolved) == RANDOM:
            identity = {"kind": RANDOM, "seed": seed}
        else:
            if os.path.isdir(resolved):
                raise UsageError(f"{resolved}: is a folder; --weights takes a checkpoint file (.pth/.pt/.safetensors)")
            identity = {"kind": "file", "sha256": file_sha256(resolved)}
    if calib is not None:
        identity["calib"] = str(calib)
    return identity
