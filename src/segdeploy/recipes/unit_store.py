"""The run's units: one stored result per step and configuration, reused while its inputs are unchanged.

Every step of ``segdeploy run`` is made of *units* (one per backend/precision configuration; export
has one per artifact). A unit that finishes is stored as ``RUN_DIR/steps/<step>/<unit>.json`` with a
fingerprint of everything that determines it (model, weights sha256 or seed, device, library
versions, the unit's settings, the artifact it used). A later run with the same settings loads it
(``resumed``); a changed setting recomputes only the units it touches; ``force`` recomputes all.
Skipped and failed units are never stored: they are tried again on the next run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


class StepSkipped(Exception):
    """A step or unit cannot run for want of its input; the message is the recorded reason."""


@dataclass(frozen=True)
class Config:
    """One runtime configuration of the matrix."""

    backend: str
    precision: str

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"

    @property
    def slug(self) -> str:
        return f"{self.backend}-{self.precision}"


def reference_config() -> Config:
    """What every configuration is judged against: fp32 on the backend that runs the PyTorch module."""
    from segdeploy.backends import module_backends

    return Config(module_backends()[0], "fp32")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def fingerprint(data: Any) -> str:
    """sha256 of the canonical JSON of ``data``: what a stored unit was computed from."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


class UnitStore:
    """Storage of the units under ``run_dir/steps``; mixed into the Runner, which provides
    ``run_dir``, ``force``, ``spec``, ``weights`` and ``options``."""

    def _base(self) -> dict[str, Any]:
        from segdeploy.convert.fingerprints import library_versions

        # Library versions are part of every unit's identity: an upgraded exporter or runtime must
        # recompute, never resume results an older one produced.
        return {"model": self.spec.name, "preprocess": dataclasses.asdict(self.spec.preprocess),
                "weights": self.weights.get("sha256") or f"random:{self.weights.get('seed')}",
                "device": self.options.device, "libraries": library_versions()}

    # -- unit storage ---------------------------------------------------------------------------
    def _unit_path(self, step: str, slug: str) -> Path:
        return self.run_dir / "steps" / step / f"{slug}.json"

    def _lookup(self, step: str, slug: str, fp: str,
                valid: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any] | None:
        """The stored unit when it is done, its fingerprint is ``fp`` and ``valid`` accepts it."""
        path = self._unit_path(step, slug)
        if self.force or not path.is_file():
            return None
        try:
            stored = json.loads(path.read_text())
        except ValueError:
            return None
        if stored.get("fingerprint") != fp or stored.get("status") != "done" or (valid and not valid(stored)):
            return None
        stored["resumed"] = True
        return stored

    def _store(self, step: str, slug: str, unit: dict[str, Any]) -> dict[str, Any]:
        """Keep a done unit on disk; forget a stored one that did not succeed this time."""
        from segdeploy.engine.writers import atomic_write_text

        path = self._unit_path(step, slug)
        if unit["status"] == "done":
            atomic_write_text(path, json.dumps(unit, indent=2, default=json_default))
        elif path.is_file():
            path.unlink()  # a stale success must not be picked up after this run failed it
        return unit

    def _fp(self, key: dict[str, Any]) -> str:
        return fingerprint({**self._base(), **key})

    def _unit(self, step: str, slug: str, key: dict[str, Any], compute: Callable[[], dict[str, Any]],
              valid: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        """A stored unit when its fingerprint matches (and ``valid``), else ``compute()`` (stored if done).

        ``compute`` returns the unit dict; it may raise StepSkipped (→ status skipped) or anything
        else (→ status failed, with the error and the tail of the traceback).
        """
        fp = self._fp(key)
        stored = self._lookup(step, slug, fp, valid)
        if stored is not None:
            return stored
        started = time.perf_counter()
        began = utc_now()
        try:
            unit = {"status": "done", "reason": None, **compute()}
        except StepSkipped as exc:
            unit = {"status": "skipped", "reason": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one configuration's failure must not stop the run
            unit = failure(exc)
        unit.update(fingerprint=fp, started_utc=began, wall_s=round(time.perf_counter() - started, 3), resumed=False)
        return self._store(step, slug, unit)


def pending_step() -> dict[str, Any]:
    return {"status": "skipped", "reason": "not run yet", "result": None, "wall_s": None, "resumed": False,
            "started_utc": None, "fingerprint": None}


def finite(obj: Any) -> Any:
    """JSON has no NaN / Infinity: such a number (e.g. a metric of an empty set) is written as null."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def plain(data: Any) -> Any:
    return json.loads(json.dumps(data, default=json_default))


def json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    return str(obj)


def failure(exc: BaseException) -> dict[str, Any]:
    tail = traceback.format_exc().strip().splitlines()[-6:]
    return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}", "traceback": tail}
