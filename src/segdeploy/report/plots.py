"""The report's PNG plots, drawn from the typed results.

Conventions every plot follows: the x-axis shows the real batch sizes (1, 2, 4, …: a log-2 axis
labelled with the numbers, not 2⁰, 2¹); the y-axis starts at zero; each configuration keeps one
colour in every chart (its position in the run's matrix); a configuration that fails the fidelity
gate is drawn dashed with ✗ markers and "FAIL" in its legend entry, a timing taken under
contention with hollow markers and "contended"; legends sit outside the data, to the right.
"""

from __future__ import annotations

import os
from pathlib import Path

from segdeploy.report.results import Comparison, ConfigResult, RunReport

_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf", "#393b79", "#637939")


def colours(configs: tuple[ConfigResult, ...]) -> dict[str, str]:
    """Label → colour, fixed by the configuration's position in the matrix (same in every chart)."""
    return {c.label: _PALETTE[i % len(_PALETTE)] for i, c in enumerate(configs)}


def legend_label(config: ConfigResult) -> str:
    text = config.label
    if config.fails:
        text += " — FAIL gate"
    elif config.gate == "reference":
        text += " — reference"
    if config.bench_conditions and config.bench_conditions.contended:
        text += " (contended)"
    return text


def _batch_axis(ax, sizes: list[int]) -> None:
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(sizes, [str(s) for s in sizes])
    if len(sizes) == 1:
        ax.set_xlim(sizes[0] / 1.5, sizes[0] * 1.5)
    ax.set_xlabel("batch size")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def plot_throughput(report: RunReport, path: str | os.PathLike) -> Path | None:
    """images/s and median ms per image against batch size, one line per benchmarked configuration."""
    benched = report.benched
    if not benched:
        return None
    palette = colours(report.configs)
    sizes = sorted({p.batch_size for c in benched for p in c.bench})
    fig = _figure(11.5, 4.0)
    speed, latency = fig.subplots(1, 2)
    for config in benched:
        points = sorted(config.bench, key=lambda p: p.batch_size)
        xs = [p.batch_size for p in points]
        contended = bool(config.bench_conditions and config.bench_conditions.contended)
        style = {"color": palette[config.label], "linestyle": "--" if config.fails else "-",
                 "marker": "x" if config.fails else "o", "linewidth": 1.6 if config.fails else 2.0,
                 "markerfacecolor": "none" if contended else palette[config.label], "label": legend_label(config)}
        speed.plot(xs, [p.images_per_s for p in points], **style)
        latency.plot(xs, [p.ms_per_image for p in points], **{**style, "label": None})
    for ax, ylabel in ((speed, "images / s (higher is better)"), (latency, "median ms per image (lower is better)")):
        _batch_axis(ax, sizes)
        ax.set_ylim(bottom=0, top=ax.get_ylim()[1] * 1.08)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    speed.set_title("throughput", fontsize=9)
    latency.set_title("latency per image", fontsize=9)
    fig.legend(loc="center left", bbox_to_anchor=(0.715, 0.5), fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.06, right=0.70, wspace=0.3, bottom=0.14, top=0.9)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def plot_published(report: RunReport, path: str | os.PathLike) -> Path | None:
    """Comparable published throughput rows beside this run's measurement (None when there is none)."""
    rows: list[Comparison] = [c for c in report.comparable if c.kind == "throughput" and c.batch_size]
    if not rows:
        return None
    fig = _figure(10.5, 3.8)
    ax = fig.subplots()
    groups: dict[str, list[Comparison]] = {}
    for row in rows:
        groups.setdefault(f"published: {row.hardware} {row.precision_label or row.precision or ''}".strip(),
                          []).append(row)
    for index, (label, items) in enumerate(sorted(groups.items())):
        items.sort(key=lambda r: r.batch_size or 0)
        ax.plot([r.batch_size for r in items], [r.published for r in items], linestyle=":", marker="s",
                color=_PALETTE[-1 - index % 3], label=label)
    palette = colours(report.configs)
    measured = {config.label: config for config in report.benched if config.passes}
    for config in measured.values():
        points = sorted(config.bench, key=lambda p: p.batch_size)
        ax.plot([p.batch_size for p in points], [p.images_per_s for p in points], "-o", color=palette[config.label],
                label=f"this run: {legend_label(config)}")
    sizes = sorted({r.batch_size for r in rows} | {p.batch_size for c in measured.values() for p in c.bench})
    _batch_axis(ax, sizes)
    ax.set_ylim(bottom=0, top=ax.get_ylim()[1] * 1.08)
    ax.set_ylabel("images / s")
    ax.set_title(f"comparable published rows vs this run ({report.measured_on})", fontsize=8)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.07, right=0.68, bottom=0.14, top=0.9)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def make_plots(report: RunReport, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write every plot that has data into ``out_dir``; returns {name: path}."""
    out_dir = Path(out_dir)
    plots = {}
    for name, function, file_name in (("throughput", plot_throughput, "throughput.png"),
                                      ("published", plot_published, "published_vs_measured.png")):
        path = function(report, out_dir / file_name)
        if path is not None:
            plots[name] = path
    return plots
