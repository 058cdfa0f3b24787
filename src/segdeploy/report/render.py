"""``results.json`` of a ``segdeploy run`` → ``report.md`` and a self-contained ``report.html``.

Both are rendered with jinja2 from the templates shipped in ``segdeploy/report/templates`` and
from the typed :class:`~segdeploy.report.results.RunReport` (never from the raw document). The
HTML embeds its plots (and the demo's cut-outs, as thumbnails) as base64 ``data:`` URIs, so the
file can be mailed or archived alone. Both open with the verdict.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any

from segdeploy.report.document import measured_on, read_document
from segdeploy.report.published import fold_reasons
from segdeploy.report.results import SCHEMA_ID, STEP_NAMES, BenchPoint, ConfigResult, RunReport
from segdeploy.report.schema import check_results, results_schema, validate_results

__all__ = ["SCHEMA_ID", "STEP_NAMES", "SECTIONS", "check_results", "results_schema", "validate_results",
           "render_markdown", "render_html", "write_reports", "measured_on", "read_document"]

#: Section anchors every HTML report has (and titles every Markdown report has), in order.
SECTIONS = (("verdict", "Verdict"), ("warnings", "Read this first"), ("fidelity", "Fidelity against PyTorch fp32"),
            ("throughput", "Throughput and latency"), ("published", "Published vs measured"),
            ("accuracy", "Accuracy"), ("summary", "Run"), ("environment", "Environment"))

#: width in pixels of the cut-out thumbnails embedded in the HTML
THUMBNAIL_WIDTH = 250


class Formats:
    """Number and text formatting the templates call (``f.num(x, 4)``, ...)."""

    @staticmethod
    def num(value: Any, digits: int = 4) -> str:
        if value is None:
            return "—"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, int):
            return f"{value:,}"
        if isinstance(value, float):
            if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
                return f"{value:.3g}"
            if abs(value) >= 100:
                return f"{value:,.1f}"
            return f"{value:.{digits}f}"
        return str(value)

    @staticmethod
    def ratio(value: float | None) -> str:
        return "—" if value is None else f"{value:.3g}×"

    @staticmethod
    def share(value: float | None) -> str:
        return "—" if value is None else f"{100 * value:.1f} %"

    @staticmethod
    def metric_name(key: str) -> str:
        return {"images_per_s": "images/s"}.get(key, key)

    def metric(self, key: str, value: Any) -> str:
        return self.num(value, 1 if key == "images_per_s" else 4)

    @staticmethod
    def css(config: ConfigResult) -> str:
        return "bad" if config.fails else ("ok" if config.passes else "skip")

    @staticmethod
    def why(config: ConfigResult) -> str:
        if config.fails:
            return "; ".join(config.gate_reasons)
        if config.gate == "reference":
            return "reference"
        if config.gate == "pass":
            return "within tolerance"
        return config.reason or ""

    def gt(self, config: ConfigResult) -> str:
        f = config.fidelity
        if f is None or f.gt_reference is None:
            return "—"
        return f"{f.gt_metric}: {self.num(f.gt_reference, 4)} → {self.num(f.gt_candidate, 4)}"

    def spread(self, point: BenchPoint) -> str:
        if point.p90_ms is not None:
            return f"p90 {self.num(point.p90_ms, 1)}"
        return f"min–max {self.num(point.min_ms, 1)}–{self.num(point.max_ms, 1)}"

    @staticmethod
    def conditions(config: ConfigResult) -> str:
        return config.bench_conditions.summary() if config.bench_conditions else "not recorded"

    @staticmethod
    def weights(r: RunReport) -> str:
        w = r.weights
        if w.random:
            return f"random weights (seed {w.seed}) — accuracy and masks are meaningless"
        return f"{Path(w.path).name if w.path else '?'} (sha256 {(w.sha256 or '')[:12]}…)"

    @staticmethod
    def bench_settings(r: RunReport) -> str:
        from segdeploy.report.results import MIN_CALLS_FOR_P90

        return (f"Pure inference on seeded random input {'x'.join(map(str, r.input_size))}; per batch size the "
                f"runtime's own warm-up, {r.bench_warmup} more untimed and {r.bench_iters} timed calls. A latency "
                "is one runtime call on a whole batch; throughput = images processed / wall time. The spread is "
                f"the 90th percentile from {MIN_CALLS_FOR_P90} timed calls on, min–max below that. Load average and "
                "CPU frequency were read before and after each configuration's timing.")

    @staticmethod
    def step(r: RunReport, name: str):
        return next(s for s in r.steps if s.name == name)


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _environment(autoescape: bool):
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("segdeploy.report", "templates"), autoescape=autoescape,
                      undefined=StrictUndefined, trim_blocks=False, lstrip_blocks=False, keep_trailing_newline=True)
    env.filters["md"] = _md
    return env


def _report(results: dict[str, Any] | RunReport) -> RunReport:
    return results if isinstance(results, RunReport) else read_document(results)


def render_markdown(results: dict[str, Any] | RunReport, plots: dict[str, str] | None = None) -> str:
    """The report in Markdown; ``plots`` maps plot name to a path relative to the report."""
    report = _report(results)
    text = _environment(False).get_template("report.md.j2").render(
        r=report, plots=plots or {}, f=Formats(), folded=fold_reasons(report.published))
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text


def _thumbnail(path: Path) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.thumbnail((THUMBNAIL_WIDTH, THUMBNAIL_WIDTH * 2))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", optimize=True)
    except OSError:
        return None
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def render_html(results: dict[str, Any] | RunReport, plots: dict[str, bytes] | None = None,
                run_dir: str | os.PathLike | None = None) -> str:
    """A self-contained HTML report; ``plots`` maps plot name to PNG bytes (embedded as base64).

    ``run_dir``: where the demo's cut-outs are (their thumbnails are embedded).
    """
    report = _report(results)
    encoded = {name: base64.b64encode(data).decode("ascii") for name, data in (plots or {}).items()}
    cutouts: dict[str, str] = {}
    if report.demo and run_dir is not None:
        for item in report.demo.cutouts:
            if item.cutout and (thumb := _thumbnail(Path(run_dir) / item.cutout)):
                cutouts[item.file] = thumb
    return _environment(True).get_template("report.html.j2").render(
        r=report, plots=encoded, cutouts=cutouts, f=Formats(), folded=fold_reasons(report.published))


def write_reports(run_dir: str | os.PathLike, results: dict[str, Any] | RunReport) -> dict[str, Path]:
    """Render ``results`` into ``run_dir``: plots/*.png, report.md, report.html. Returns the paths."""
    from segdeploy.engine.writers import atomic_write_text
    from segdeploy.report.plots import make_plots

    run_dir = Path(run_dir)
    report = _report(results)
    plot_paths = make_plots(report, run_dir / "plots")
    rel = {name: path.relative_to(run_dir).as_posix() for name, path in plot_paths.items()}
    data = {name: path.read_bytes() for name, path in plot_paths.items()}
    files = {"report.md": atomic_write_text(run_dir / "report.md", render_markdown(report, rel)),
             "report.html": atomic_write_text(run_dir / "report.html", render_html(report, data, run_dir))}
    files.update({f"plots/{p.name}": p for p in plot_paths.values()})
    return files
