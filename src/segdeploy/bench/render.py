"""Renderings of bench reports (CSV, Markdown, the CLI table, a PNG plot)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from segdeploy.bench.records import MIB, BenchReport



CSV_COLUMNS = (
    "label", "model", "backend", "precision", "device", "input_h", "input_w", "batch_size", "images",
    "batches", "wall_s", "images_per_s", "latency_min_ms", "latency_median_ms", "latency_mean_ms",
    "latency_p90_ms", "latency_p99_ms", "latency_max_ms", "ms_per_image", "flops_per_image",
    "achieved_tflops", "share_of_limit", "share_of_image_limit", "host_peak_rss_bytes",
    "device_peak_bytes", "device_only_images_per_s", "h2d_ms", "compute_ms", "d2h_ms", "split_method",
    "e2e_images", "e2e_images_per_s", "e2e_ratio_to_pure", "best",
)


def _as_list(reports: BenchReport | Sequence[BenchReport]) -> list[BenchReport]:
    return [reports] if isinstance(reports, BenchReport) else list(reports)


def _rows(report: BenchReport):
    for r in report.results:
        lat = r.latency
        yield {
            "label": report.label, "model": report.model, "backend": report.backend,
            "precision": report.precision, "device": report.device, "input_h": report.input_size[0],
            "input_w": report.input_size[1], "batch_size": r.batch_size, "images": r.images,
            "batches": r.batches, "wall_s": r.wall_s, "images_per_s": r.images_per_s,
            "latency_min_ms": lat.min_ms, "latency_median_ms": lat.median_ms, "latency_mean_ms": lat.mean_ms,
            "latency_p90_ms": lat.p90_ms, "latency_p99_ms": lat.p99_ms, "latency_max_ms": lat.max_ms,
            "ms_per_image": r.ms_per_image, "flops_per_image": report.flops_per_image,
            "achieved_tflops": r.achieved_tflops, "share_of_limit": r.share_of_limit,
            "share_of_image_limit": r.share_of_image_limit, "host_peak_rss_bytes": r.host_peak_rss_bytes,
            "device_peak_bytes": r.device_peak_bytes,
            "device_only_images_per_s": r.device_only.images_per_s if r.device_only else None,
            "h2d_ms": r.split.h2d_ms if r.split else None,
            "compute_ms": r.split.compute_ms if r.split else None,
            "d2h_ms": r.split.d2h_ms if r.split else None,
            "split_method": r.split.method if r.split else None,
            "e2e_images": r.e2e.images if r.e2e else None,
            "e2e_images_per_s": r.e2e.images_per_s if r.e2e else None,
            "e2e_ratio_to_pure": r.e2e.ratio_to_pure if r.e2e else None,
            "best": r.best,
        }


def render_csv(reports: BenchReport | Sequence[BenchReport]) -> str:
    """One CSV row per (report, batch size), columns :data:`CSV_COLUMNS`; empty cell = not measured."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for report in _as_list(reports):
        for row in _rows(report):
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 100:
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.1f}"
    if 0 < abs(value) < 1:  # keep significant digits of sub-millisecond latencies
        return f"{value:.{digits + 1}g}"
    return f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def table_rows(report: BenchReport) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of the per-batch table (shared by Markdown and the CLI)."""
    header = ["batch", "images", "batches", "img/s", "median ms", "p90 ms", "p99 ms", "ms/img", "TFLOP/s",
              "% limit", "host peak MiB"]
    has_gpu = any(r.device_peak_bytes is not None for r in report.results)
    has_only = any(r.device_only is not None for r in report.results)
    has_e2e = any(r.e2e is not None for r in report.results)
    if has_gpu:
        header += ["device peak MiB", "H2D / compute / D2H ms"]
    if has_only:
        header += ["device-only img/s"]
    if has_e2e:
        header += ["e2e img/s", "e2e / pure"]
    header.append("best")
    rows = []
    for r in report.results:
        cells = [
            str(r.batch_size), _fmt(r.images), _fmt(r.batches), _fmt(r.images_per_s), _fmt(r.latency.median_ms),
            _fmt(r.latency.p90_ms), _fmt(r.latency.p99_ms), _fmt(r.ms_per_image, 3), _fmt(r.achieved_tflops, 3),
            _pct(r.share_of_limit),
            _fmt(None if r.host_peak_rss_bytes is None else r.host_peak_rss_bytes / MIB, 0),
        ]
        if has_gpu:
            cells.append(_fmt(None if r.device_peak_bytes is None else r.device_peak_bytes / MIB, 0))
            cells.append("—" if r.split is None else
                         f"{r.split.h2d_ms:.2f} / {r.split.compute_ms:.2f} / {r.split.d2h_ms:.2f}")
        if has_only:
            cells.append(_fmt(r.device_only.images_per_s if r.device_only else None))
        if has_e2e:
            cells.append(_fmt(r.e2e.images_per_s if r.e2e else None))
            cells.append(_pct(r.e2e.ratio_to_pure if r.e2e else None))
        cells.append("**best**" if r.best else "")
        rows.append(cells)
    return header, rows


def render_markdown(reports: BenchReport | Sequence[BenchReport]) -> str:
    """A Markdown section per report: what was measured, then one row per batch size."""
    parts: list[str] = []
    for report in _as_list(reports):
        gflop = "unknown" if report.flops_per_image is None else f"{report.flops_per_image / 1e9:.2f}"
        runtime = ", ".join(f"{k}={v}" for k, v in report.runtime.items() if not isinstance(v, (dict, list)))
        parts.append(f"### {report.model} — {report.label} on {report.device}\n")
        parts.append(f"- input {report.input_size[0]}x{report.input_size[1]}, {gflop} GFLOP/image "
                     f"(conv+linear, 2 FLOP/MAC); limit {report.limit_tflops or '—'} TFLOP/s")
        parts.append(f"- runtime: {runtime or '—'}")
        parts.append(f"- weights: {report.weights}")
        s = report.settings
        loop = f"{s.get('iters')} timed calls" if s.get("iters") else f"{s.get('duration_s')} s"
        parts.append(f"- warm-up {s.get('warmup')} calls, {loop} per batch size; {s.get('input')}")
        parts.append(f"- a latency is {report.pure_includes}; percentiles: {s.get('percentiles')}")
        for note in report.notes:
            parts.append(f"- note: {note}")
        header, rows = table_rows(report)
        parts.append("")
        parts.append("| " + " | ".join(header) + " |")
        parts.append("| " + " | ".join(["---:"] * (len(header) - 1) + [":---:"]) + " |")
        parts.extend("| " + " | ".join(cells) + " |" for cells in rows)
        parts.append("")
    return "\n".join(parts)


def plot_reports(reports: BenchReport | Sequence[BenchReport], path: str | os.PathLike) -> Path:
    """PNG: images/s (left) and p50 (solid) / p90 (dashed) latency (right) against batch size.

    One line per report label (backend/precision); uses the Agg canvas, no display needed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    items = _as_list(reports)
    if not items:
        raise ValueError("nothing to plot")
    fig = Figure(figsize=(11, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax_t, ax_l = fig.subplots(1, 2)
    for index, report in enumerate(items):
        color = f"C{index % 10}"
        bs = [r.batch_size for r in report.results]
        ax_t.plot(bs, [r.images_per_s for r in report.results], "o-", color=color, label=report.label)
        ax_l.plot(bs, [r.latency.median_ms for r in report.results], "o-", color=color,
                  label=f"{report.label} p50")
        ax_l.plot(bs, [r.latency.p90_ms for r in report.results], "s--", color=color,
                  label=f"{report.label} p90")
    models = sorted({r.model for r in items})
    for ax in (ax_t, ax_l):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    ax_t.set_ylabel("images / s")
    ax_t.set_title(f"throughput — {', '.join(models)}")
    ax_l.set_ylabel("latency per batch, ms")
    ax_l.set_title("p50 (solid) / p90 (dashed)")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out

