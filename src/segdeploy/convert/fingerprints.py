"""What identifies an artifact: a module's weights (state_dict digest), the library versions it was
made with, a short weights tag for file names, and the sha256 check that a stored file is intact.

The export cache, the int8 cache and the recipe runner's
step fingerprints all key on these, and none of them needs the exporter to compute a key.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any


def state_dict_digest(module) -> str:
    """sha256 over the module's state_dict (names, shapes, dtypes, bytes): identifies unnamed weights."""
    import torch

    digest = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries an artifact depends on (None = not installed). Cache keys include
    them: an upgraded exporter, quantizer or runtime must not reuse what an older one made."""
    from importlib.metadata import PackageNotFoundError, version

    from segdeploy import __version__

    out: dict[str, str | None] = {"segdeploy": __version__}
    for name in ("torch", "onnx", "onnxruntime", "openvino"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def artifact_intact(path: str | os.PathLike, recorded_sha256: str | None) -> bool:
    """True when ``path`` is a file whose sha256 is ``recorded_sha256``: a cached artifact is reused
    only when it is byte for byte what was written (a file corrupted in place keeps its size)."""
    from segdeploy.zoo.checkpoints import file_sha256

    path = Path(path)
    if not recorded_sha256 or not path.is_file():
        return False
    try:
        return file_sha256(path) == recorded_sha256
    except OSError:
        return False


def weights_tag(info: dict[str, Any], module=None) -> str:
    """Short file-name tag for a weights record: sha256 prefix, ``random<seed>``, or a content hash."""
    if info.get("sha256"):
        return str(info["sha256"])[:12]
    if info.get("kind") == "random":
        return f"random{info.get('seed')}"
    if module is not None:
        return "sd" + state_dict_digest(module)[:12]
    return "unknown"
