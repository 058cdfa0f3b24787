"""The ``auto`` choice cache: evidence, not truth.

A cached choice is JSON under ``<cache>/auto/``. When written it carries two digests:

* ``digest``: sha256 of its own content (every field but the digests and where it was read from),
  so that an edited file — a precision changed by hand, a table whose gate now "passes" — no
  longer verifies;
* ``artifact_sha256``: sha256 of the file it names (an int8 IR: the ``.xml`` and its ``.bin``),
  so that a swapped or tampered artifact is not run on the strength of a gate it never took.

:func:`load_choice` returns the choice only when the key, both digests and the artifact agree;
otherwise it says why, and the caller chooses again (and says so).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from segdeploy.backends.auto import AutoChoice

#: fields that are not part of the evidence (where the file was read from, the digests themselves)
_NOT_HASHED = ("digest", "artifact_sha256", "cache_path", "source")


def content_digest(data: dict[str, Any]) -> str:
    body = {k: v for k, v in data.items() if k not in _NOT_HASHED}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def artifact_digest(path: str | None) -> str | None:
    """sha256 over an artifact's bytes (an OpenVINO ``.xml`` with its ``.bin``); None for no artifact."""
    if not path:
        return None
    h = hashlib.sha256()
    files = [Path(path)]
    if files[0].suffix.lower() == ".xml":
        files.append(files[0].with_suffix(".bin"))
    for file in files:
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def save_choice(choice: AutoChoice, path: Path) -> None:
    """Write ``choice`` to ``path`` (atomically) with its content and artifact digests."""
    from segdeploy.engine.writers import atomic_write_text

    data = choice.to_dict()
    data["source"] = choice.source
    data["artifact_sha256"] = artifact_digest(choice.artifact)
    data["digest"] = content_digest(data)
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")
    choice.digest = data["digest"]


def load_choice(path: Path, key: dict[str, Any]) -> tuple[AutoChoice | None, str | None]:
    """(the cached choice, None) when ``path`` verifies, else (None, why not); (None, None) when
    there is no file."""
    if not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        return None, f"unreadable ({exc})"
    if data.get("digest") != content_digest(data):
        return None, "its content does not match its digest (edited after it was written)"
    if data.get("key") != json.loads(json.dumps(key, default=str)):
        return None, "it was made for other settings, libraries or another version"
    artifact = data.get("artifact")
    if artifact:
        try:
            actual = artifact_digest(artifact)
        except OSError:
            return None, f"the artifact it names is missing ({Path(artifact).name})"
        if actual != data.get("artifact_sha256"):
            return None, f"the artifact it names ({Path(artifact).name}) is not the one that was judged"
    try:
        choice = AutoChoice.from_dict({k: v for k, v in data.items() if k != "artifact_sha256"})
    except (TypeError, ValueError, KeyError) as exc:
        return None, f"malformed ({exc})"
    choice.cache_path = str(path)
    return choice, None
