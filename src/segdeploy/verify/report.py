"""The result of a comparison: one row per backend x precision, its verdict and the exit code."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from segdeploy.core.errors import EXIT_FIDELITY_FAILED, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE
from segdeploy.engine.gate import Gate


@dataclass(frozen=True)
class CompareRow:
    """One backend x precision against the reference.

    status: "pass"; "fail" (the gate failed: ``failures`` name the image and the measure);
    "error" (the runtime raised while running: ``reason``); "unavailable" (cannot run here: not a
    failure unless require_all).
    """

    backend: str
    precision: str
    device: str
    status: str
    reason: str = ""
    failures: tuple[str, ...] = ()
    gate: Gate | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    images: tuple[dict[str, Any], ...] = ()
    runtime: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    notes: tuple[str, ...] = ()
    #: the file the candidate ran ({"name", "sha256"}; empty for the PyTorch backend)
    artifact: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status in ("fail", "error")

    @property
    def judged(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class CompareReport:
    model: str
    task: str
    weights: dict[str, Any]
    images: int
    reference: dict[str, Any]
    rows: tuple[CompareRow, ...]
    checked_outputs: tuple[str, ...] = ()
    min_images: int = 16
    few_images: bool = False
    require_all: bool = False
    environment: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not any(r.failed or (self.require_all and r.status == "unavailable") for r in self.rows)

    @property
    def compared(self) -> bool:
        return any(r.status in ("pass", "fail") for r in self.rows)

    def exit_code(self) -> int:
        """4 when a runtime raised, 3 when a gate failed (or, with require_all, a row is unavailable),
        2 when nothing could be compared, else 0."""
        if any(r.status == "error" for r in self.rows):
            return EXIT_RUNTIME
        if not self.passed:
            return EXIT_FIDELITY_FAILED
        if not self.compared:
            return EXIT_USAGE
        return EXIT_OK

    def row(self, backend: str, precision: str) -> CompareRow:
        for r in self.rows:
            if (r.backend, r.precision) == (backend, precision):
                return r
        raise KeyError(f"no row {backend} {precision}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        data["exit_code"] = self.exit_code()
        return _finite(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def table(self):
        """A rich Table: per row the gated measures' quantile / worst values and the tensor error."""
        from rich.table import Table

        from segdeploy.tasks import get_task

        measures = [m for m in get_task(self.task).fidelity_measures]
        few = " — FEW IMAGES (--allow-few-images)" if self.few_images else ""
        table = Table(title=f"{self.model}: fidelity vs {self.reference.get('label', 'PyTorch fp32')} "
                            f"({self.images} images){few}")
        for col in ("backend", "prec", "status", "images"):
            table.add_column(col, no_wrap=True)
        for m in measures:
            table.add_column(f"{m.name} {'p5' if m.higher_is_better else 'p95'} / worst", justify="right")
        table.add_column("tensor err (worst ratio)", justify="right")
        colours = {"pass": "green", "fail": "red", "error": "red", "unavailable": "yellow"}
        for r in self.rows:
            cells = [r.backend, r.precision, f"[{colours[r.status]}]{r.status}[/]", str(r.judged or "")]
            stats = (r.summary or {}).get("measures", {})
            for m in measures:
                s = stats.get(m.name)
                cells.append("" if not s or s["worst"] is None else f"{s['quantile']:.4f} / {s['worst']:.4f}")
            tensors = (r.summary or {}).get("tensors", {})
            worst = max((t["ratio_q_worst"] for t in tensors.values() if t.get("ratio_q_worst") is not None),
                        default=None)
            cells.append("" if worst is None else f"{worst:.3g}")
            table.add_row(*cells)
        return table

    def render(self, console=None) -> None:
        from rich.console import Console

        console = console or Console()
        console.print(self.table())
        for r in self.rows:
            for line in list(r.failures) + ([r.reason] if r.reason else []) + list(r.notes):
                colour = "red" if r.failed else "yellow" if r.status == "unavailable" else "dim"
                console.print(f"[{colour}]{r.backend} {r.precision}:[/] {line}", highlight=False)
        for note in self.notes:
            console.print(f"[yellow]note:[/] {note}", highlight=False)
        if any(r.status == "error" for r in self.rows):
            verdict = "[red]RUNTIME ERROR[/]"
        elif not self.passed:
            verdict = "[red]GATE FAILED[/]"
        elif not self.compared:
            verdict = "[yellow]NOTHING COMPARED[/]"
        else:
            verdict = "[green]PASS[/]"
        console.print(f"{verdict}: {sum(r.status == 'pass' for r in self.rows)} pass, "
                      f"{sum(r.status == 'fail' for r in self.rows)} fail, "
                      f"{sum(r.status == 'error' for r in self.rows)} error, "
                      f"{sum(r.status == 'unavailable' for r in self.rows)} unavailable"
                      + (" (counted as failures: --require-all)" if self.require_all else ""))


def _finite(obj):
    """JSON has no inf/nan: write them as strings."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_report(report: CompareReport, path: str | os.PathLike) -> Path:
    from segdeploy.engine.writers import atomic_write_text

    return atomic_write_text(path, report.to_json())
