"""segdeploy bench: images/s and latency over a batch sweep, pure inference and end to end."""

from __future__ import annotations

from segdeploy.cli.common import (BackendsHelp, backend_name, count, device_name, int_list, make_console,
                                  model_argument, positive_number, precision_or_auto, size_hw, torch_arguments,
                                  torch_options, weights_argument)

DESCRIPTION = """\
Measure throughput and per-batch latency of one model on one runtime and precision.

Pure inference: seeded random (standard-normal, never zero) inputs in 3+ rotating buffers; warm-up
outside the timed region; a latency is one runtime call (on a GPU: host->device copy, forward,
device->host copy, with a device synchronise). Throughput = images actually processed / wall time.
Reported per batch size: images/s, median/p90/p99 latency, achieved TFLOP/s (and the share of
--limit-tflops), peak host memory, on CUDA peak device memory and the H2D / compute / D2H split.
With --images DIR, each batch size also runs end to end (read -> preprocess -> infer -> decode ->
PNG written to a temporary folder) and its images/s is shown beside the pure figure.
With --backend auto, the table behind the choice is printed first: every backend x precision the
probe tried, its images/s, its fidelity-gate measures and why it failed or could not run.
Every number printed is also in --json.
"""

EPILOG = """\
examples:
  segdeploy bench u2netp --backend openvino --batch-sizes 1,4,8
  segdeploy bench unetpp_dsb2018 --backend onnxruntime --precision int8 --duration 10 --json r.json
  segdeploy bench u2net --device cuda --precision fp16 --batch-sizes 1,8,32,64 --plot u2net.png
  segdeploy bench u2net --backend auto --images photos/ --csv u2net.csv
"""


def register(sub) -> None:
    import argparse

    parser = sub.add_parser("bench", help="benchmark throughput and latency over batch sizes",
                            description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    model_argument(parser)
    parser.add_argument("--backend", default="torch", type=backend_name,
                        help=BackendsHelp("{backends} | auto (default: torch); auto prints the probe table "
                                          "behind its choice"))
    parser.add_argument("--precision", default="fp32", type=precision_or_auto,
                        help="fp32 | fp16 | bf16 | int8 | auto (auto: with --backend auto) (default: fp32)")
    parser.add_argument("--device", default="cpu", type=device_name, help="cpu | cuda[:N] (default: cpu); never silently falls back")
    parser.add_argument("--batch-sizes", type=int_list, default=[1], metavar="B1,B2,...",
                        help="batch sizes to sweep (default: 1)")
    parser.add_argument("--warmup", type=count(0), default=10, metavar="N",
                        help="untimed calls per batch size after the runtime's own warm-up (default: 10)")
    loop = parser.add_mutually_exclusive_group()
    loop.add_argument("--iters", type=count(1), default=None, metavar="N",
                      help="timed calls per batch size (default: 50)")
    loop.add_argument("--duration", type=positive_number, default=None, metavar="S",
                      help="instead of --iters: time calls for S seconds per batch size")
    parser.add_argument("--input-size", type=size_hw, default=None, metavar="HxW",
                        help="network input size (default: the model's)")
    parser.add_argument("--images", metavar="DIR", help="also run end to end over the images in DIR")
    parser.add_argument("--max-images", type=count(1), default=None, metavar="N",
                        help="end to end: use the first N images of DIR")
    parser.add_argument("--workers", type=count(1), default=None, metavar="N",
                        help="end to end: reading and writing threads (default: CPU count, at most 8)")
    weights_argument(parser, default="random")
    parser.add_argument("--onnx", metavar="PATH", help="ONNX file for onnxruntime/openvino (default: export)")
    torch_arguments(parser)
    parser.add_argument("--buffers", type=count(1), default=3, metavar="N",
                        help="rotating input buffers per batch size, >= 3 (default: 3)")
    parser.add_argument("--limit-tflops", type=positive_number, default=None, metavar="T",
                        help="compute ceiling for the '%% limit' column (default: a measured one for a "
                        "known GPU, else none)")
    parser.add_argument("--limit-images-per-s", type=positive_number, default=None, metavar="R",
                        help="the model's images/s limit on this device (docs/performance.md §2), for the share")
    parser.add_argument("--label", default=None, help="name of this configuration in tables and plots")
    parser.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    parser.add_argument("--csv", metavar="PATH", help="write one CSV row per batch size")
    parser.add_argument("--markdown", metavar="PATH", help="write the report as Markdown")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of images/s and p50/p90 latency vs batch size")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    parser.set_defaults(func=run)


def run(args) -> int:
    from rich.table import Table

    from segdeploy.backends import is_auto, open_runtime
    from segdeploy.bench.harness import benchmark
    from segdeploy.bench.options import BenchOptions
    from segdeploy.bench.render import plot_reports, render_csv, render_markdown, table_rows
    from segdeploy.core.registry import get_spec
    from segdeploy.engine.writers import atomic_write_text

    spec = get_spec(args.model)
    err = make_console(stderr=True)
    out = make_console()
    runtime = None
    options = torch_options(args)
    if is_auto(args.backend) or args.precision == "auto":
        if not is_auto(args.backend):
            raise ValueError("--precision auto needs --backend auto")
        runtime = open_runtime(spec.name, "auto", device=args.device,
                               precision=None if args.precision == "auto" else args.precision,
                               weights=args.weights, seed=args.seed, onnx_path=args.onnx)
        print_selection(runtime.selection, out)
        if options and _accepts(runtime.name, options):
            err.print("[yellow]note:[/] --torch-mode/--channels-last apply when auto picks torch; reopening with them")
            runtime = open_runtime(spec.name, runtime.name, device=args.device, precision=runtime.precision,
                                   weights=args.weights, seed=args.seed, **options)
    elif options and not _accepts(args.backend, options):
        raise ValueError("--torch-mode and --channels-last are options of --backend torch")
    settings = BenchOptions(
        backend=args.backend, precision=args.precision, batch_sizes=args.batch_sizes, warmup=args.warmup,
        iters=args.iters, duration=args.duration, input_size=args.input_size, images=args.images,
        device=args.device, weights=args.weights, num_buffers=args.buffers, onnx_path=args.onnx,
        # --seed is the seed of random weights (shared flag); inputs use their own fixed seed.
        runtime_options={**({"seed": args.seed} if args.seed else {}), **options} or None,
        limit_tflops=args.limit_tflops, limit_images_per_s=args.limit_images_per_s,
        e2e_workers=args.workers, e2e_max_images=args.max_images, label=args.label,
    )
    report = benchmark(
        spec.name, settings, runtime=runtime,
        progress=None if args.quiet else (lambda message: err.print(f"[dim]{message}[/]", highlight=False)),
    )
    header, rows = table_rows(report)
    gflop = "?" if report.flops_per_image is None else f"{report.flops_per_image / 1e9:.2f}"
    table = Table(title=f"{report.model} {report.input_size[0]}x{report.input_size[1]} — {report.label} on "
                  f"{report.device} ({gflop} GFLOP/image)")
    for name in header:
        table.add_column(name, justify="right")
    for cells in rows:
        table.add_row(*[c.replace("**", "") for c in cells])
    out.print(table)
    out.print(f"a latency is {report.pure_includes}", highlight=False)
    for note in report.notes:
        out.print(f"[yellow]note:[/] {note}", highlight=False)
    if report.best is not None:
        out.print(f"best: batch {report.best.batch_size}, {report.best.images_per_s:,.1f} images/s", highlight=False)
    if (isinstance(report.weights, dict) and report.weights.get("kind") == "random") or report.weights == "random":
        out.print("[dim]random weights: speed is what is measured, outputs are meaningless[/]")
    if args.json:
        report.save_json(args.json)
        err.print(f"wrote {args.json}", highlight=False)
    if args.csv:
        atomic_write_text(args.csv, render_csv(report))
        err.print(f"wrote {args.csv}", highlight=False)
    if args.markdown:
        atomic_write_text(args.markdown, render_markdown(report))
        err.print(f"wrote {args.markdown}", highlight=False)
    if args.plot:
        plot_reports(report, args.plot)
        err.print(f"wrote {args.plot}", highlight=False)
    return 0


def print_selection(selection: dict | None, console) -> None:
    """The table behind an ``auto`` choice: every configuration tried, its speed and gate result."""
    from rich.table import Table

    if not selection:
        return
    console.print(f"backend auto → {selection['backend']} {selection['precision']} "
                  f"({selection.get('source', 'static')}): {selection['why']}", highlight=False)
    rows = selection.get("table") or []
    if not rows:
        return
    table = Table(title="auto: configurations probed (PyTorch fp32 is the fidelity reference)")
    for name in ("configuration", "status", "images/s", "gate measures", "reason", "chosen"):
        table.add_column(name, justify="right" if name == "images/s" else "left")
    chosen_label = f"{selection['backend']} {selection['precision']}" + (
        f" ({selection['quantizer']})" if selection.get("quantizer") else "")
    for row in sorted(rows, key=lambda r: -(r.get("images_per_s") or 0)):
        measures = ", ".join(f"{k} {v:.4g}" for k, v in (row.get("measures") or {}).items())
        ips = row.get("images_per_s")
        table.add_row(row["configuration"], row["status"], "—" if not ips else f"{ips:.2f}", measures,
                      row.get("reason") or "", "←" if row["configuration"] == chosen_label else "")
    console.print(table)


def _accepts(backend: str, options: dict) -> bool:
    """True when ``backend`` takes every one of ``options``."""
    from segdeploy.backends import get_runtime_class

    return set(options) <= set(get_runtime_class(backend).option_names)
