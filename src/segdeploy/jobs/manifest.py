"""The output folder's manifest: which model, weights and settings made the masks in it.

``OUT/.segdeploy-manifest.json`` records the settings of the run that wrote the folder (model,
weights sha256, backend and precision actually run, a fingerprint of preprocessing + decoding +
input policy, segdeploy version, output options) and one entry per output: the source it came from
and whether it was written or failed (with the reason). A rerun with the same settings resumes
(written entries whose files exist are skipped); a rerun with other settings is refused before
anything is written, naming the difference, unless the user asks for ``--overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from segdeploy.core.errors import UsageError
from segdeploy.engine.writers import atomic_write_text

MANIFEST_NAME = ".segdeploy-manifest.json"
FORMAT = 1
#: Bumped when the way images are read (orientation, reduction) changes what a mask contains.
READER_VERSION = 2


def preprocessing_fingerprint(spec, policy) -> str:
    """sha256 (first 16 hex digits) of everything between the file and the mask for ``spec``."""
    from segdeploy.engine.transforms import EXACT_PIXELS

    payload = {"preprocess": asdict(spec.preprocess), "decode": asdict(spec.decode), "task": spec.task,
               "max_side": policy.max_side, "exact_pixels": EXACT_PIXELS, "reader": READER_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_settings(spec, policy, weights_id: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
    """The settings a manifest compares (the runtime is compared once it is open)."""
    from segdeploy import __version__

    return {"model": spec.name, "weights": weights_id, "preprocessing": preprocessing_fingerprint(spec, policy),
            "max_side": policy.max_side, "outputs": outputs, "segdeploy": __version__}


def runtime_settings(describe: dict[str, Any] | None) -> dict[str, Any] | None:
    """Backend and precision actually run (what changes the numbers), from ``runtime.describe()``."""
    if not describe:
        return None
    keep = ("backend", "precision", "device", "provider", "providers", "cast", "unverified")
    return {key: describe[key] for key in keep if describe.get(key) is not None}


def _show(value) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable ``key: before → now`` lines for settings that differ."""
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            lines.extend(differences(a, b, f"{prefix}{key}."))
        else:
            lines.append(f"{prefix}{key}: {_show(a)} (in the folder) → {_show(b)} (this run)")
    return lines


@dataclass
class Manifest:
    """Settings and per-output status of one output folder."""

    settings: dict[str, Any]
    runtime: dict[str, Any] | None = None
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    format: int = FORMAT

    @staticmethod
    def path(out_dir: str | os.PathLike) -> Path:
        return Path(out_dir) / MANIFEST_NAME

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> "Manifest | None":
        """The folder's manifest, None when there is none. Raises UsageError when it is unreadable."""
        path = cls.path(out_dir)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(settings=data["settings"], runtime=data.get("runtime"), files=dict(data.get("files", {})),
                       format=int(data.get("format", FORMAT)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{path}: unreadable manifest ({exc}); pass --overwrite to recompute the folder "
                             "or choose another -o") from None

    def save(self, out_dir: str | os.PathLike) -> None:
        data = {"format": self.format, "settings": self.settings, "runtime": self.runtime, "files": self.files}
        # ASCII JSON: a file name that is not UTF-8 (undecodable bytes held as lone surrogates by
        # os.fsdecode) is written as \udcXX escapes and read back as the same name.
        atomic_write_text(self.path(out_dir), json.dumps(data, indent=1, sort_keys=True, ensure_ascii=True))

    def done(self, key: str, source: str, wanted: list[Path]) -> bool:
        """True when ``key`` was written from ``source`` and every wanted file exists."""
        entry = self.files.get(key)
        return bool(entry) and entry.get("status") == "written" and entry.get("source") == source and \
            all(p.exists() for p in wanted)

    def refuse_if_changed(self, settings: dict[str, Any], out_dir, what: str = "settings") -> None:
        """UsageError naming each difference when this folder was made with other settings."""
        changes = differences(self.settings, settings)
        if changes:
            raise UsageError(f"{out_dir} holds masks made with other {what}: " + "; ".join(changes)
                             + ". Nothing was changed. Pass --overwrite to recompute them, or choose another -o.")
