"""Validate a ``results.json`` document against the schema shipped in the package.

The schema (``segdeploy/report/results.schema.json``, JSON Schema draft 2020-12) says what a
reader may rely on: the verdict first, every step and configuration with a status, a reason
whenever something was skipped or failed, a sha256 for a weights file, timing conditions on every
benchmark. One rule a schema cannot state is checked here too: every published row of the recipe
appears in ``published_vs_measured``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

SCHEMA_FILE = "results.schema.json"


@lru_cache(maxsize=1)
def results_schema() -> dict[str, Any]:
    """The shipped JSON Schema of results.json."""
    return json.loads(resources.files("segdeploy.report").joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))


def _path(error) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)


def validate_results(data: Any) -> list[str]:
    """Every problem of a results document as ``path: message`` lines (empty list = valid)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(results_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    lines = [f"{_path(e)}: {e.message}" for e in errors]
    if not lines:
        rows, published = len(data["published_vs_measured"]), len(data["recipe"]["published"])
        if rows != published:
            lines.append(f"$.published_vs_measured: {rows} rows for {published} published numbers")
    return lines


def check_results(data: Any) -> None:
    """Raise ValueError listing every problem :func:`validate_results` finds."""
    errors = validate_results(data)
    if errors:
        raise ValueError("results.json does not match the segdeploy.run/1 schema:\n  " + "\n  ".join(errors))
