"""segdeploy run: one seed guide end to end, into one folder with results.json and a report."""

from __future__ import annotations

from segdeploy.cli.common import (BackendsHelp, backend_list, count, csv_list, device_name, int_list, make_console,
                                  precision_list, size_hw)
from segdeploy.core.errors import exit_code_table

DESCRIPTION = """\
Reproduce a seed guide in one command: export -> runtimes -> compare -> eval -> bench -> report.

  export    ONNX export of the model with its weights (+ int8 QDQ model when int8 is asked for)
  runtimes  open every backend x precision of the matrix; what cannot run here is skipped with
            the reason (not installed, precision not offered on this device)
  compare   fidelity of each configuration against PyTorch fp32 (tensor error, mask agreement,
            pass/fail gate) on the dataset's first 16 images, or synthetic ones without a dataset;
            a configuration that fails the gate fails the run (exit 3)
  eval      accuracy on the dataset (skipped with a reason when --data-root is not given)
  bench     images/s and latency per batch size for each configuration
  report    RUN_DIR/results.json (source of truth), report.md, report.html (self-contained)

Running the same command again resumes: finished work stored under RUN_DIR/steps/ is reused
when nothing it depends on changed (--force recomputes everything). On a CPU the defaults are
modest (the recipe's CPU batch sizes and precisions, 1 warm-up + 5 timed calls); on CUDA the
guide's batch sizes with 10 + 50 calls. Every default is a flag.
"""

EPILOG = """\
recipes:
{recipes}

examples:
  segdeploy run u2net-ecssd --data-root ECSSD/ --weights u2net.pth -o runs/u2net
  segdeploy run unetpp-dsb2018 --data-root dsb2018/ --weights nested_unet.pth --batch-sizes 1,16
  segdeploy run unetpp-bigmb -o runs/bigmb                     # random weights, as the guide
  segdeploy run u2net-ecssd --weights random --model u2netp --limit 20 -o runs/try
"""


def _recipes_text() -> str:
    from segdeploy.recipes.catalog import RECIPES

    return "\n".join(f"  {name:<16} {recipe.title}" for name, recipe in RECIPES.items())


def register(sub) -> None:
    import argparse

    from segdeploy.recipes.catalog import list_recipes

    parser = sub.add_parser("run", help="a seed guide end to end: export, runtimes, compare, eval, bench, report",
                            description=DESCRIPTION,
                            epilog=EPILOG.format(recipes=_recipes_text()) + "\n" + exit_code_table(),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", metavar="RECIPE", help=f"one of: {', '.join(list_recipes())}")
    add_run_arguments(parser)
    parser.set_defaults(func=run)


def add_run_arguments(parser, *, demo: bool = False) -> None:
    """The flags shared by ``run`` and ``demo`` (demo fixes weights and dataset itself)."""
    if not demo:
        parser.add_argument("--weights", metavar="PATH|random", default=None,
                            help="official checkpoint as published, or 'random' (deterministic random weights: "
                            "accuracy is then meaningless). Default: the recipe's (random for unetpp-bigmb), "
                            "else required")
        parser.add_argument("--data-root", metavar="DIR", help="dataset folder as distributed; without it the "
                            "eval step is skipped")
        parser.add_argument("--dataset", metavar="LAYOUT", help="another dataset layout the recipe accepts "
                            "(u2net-ecssd: msra-b, duts-te, ...)")
        parser.add_argument("--dataset-opt", action="append", default=[], metavar="KEY=VALUE",
                            help="dataset reader option, e.g. split=val (repeatable)")
        parser.add_argument("--model", help="another model the recipe accepts (e.g. u2netp for u2net-ecssd)")
        parser.add_argument("--limit", type=count(1), metavar="N", help="evaluate only the first N samples")
        parser.add_argument("--seed", type=count(0), default=0, help="seed of --weights random (default 0)")
    parser.add_argument("-o", "--out", "--run-dir", dest="run_dir", metavar="RUN_DIR", default=None,
                        help="output folder (default: " + ("runs/demo" if demo else "runs/<recipe>") + ")")
    parser.add_argument("--device", default=None if demo else "auto", type=device_name,
                        help="cpu | cuda[:N] | auto (cuda when present)" + (" (default: cpu)" if demo else
                                                                             " (default: auto)"))
    parser.add_argument("--backends", type=backend_list, metavar="LIST",
                        help=BackendsHelp("backends to try, of {backends} (default: every one)"))
    parser.add_argument("--precisions", type=precision_list, metavar="LIST",
                        help="precisions to try: fp32,fp16,bf16,int8 (default: the recipe's for the device)")
    parser.add_argument("--batch-sizes", type=int_list, metavar="LIST",
                        help="benchmark batch sizes (default: the guide's on CUDA, a small set on CPU)")
    parser.add_argument("--input-size", type=size_hw, metavar="HxW",
                        help="benchmark input size (default: the size the guide compiled for)")
    parser.add_argument("--model-input-size", type=size_hw, metavar="HxW",
                        help="squash images to this size instead of the model's own (quick trials and tests; "
                        "accuracy is then not the guide's, the report says so)")
    parser.add_argument("--calib", metavar="DIR", help="int8: calibration images (default: images other than "
                        "those the compare step judges)")
    parser.add_argument("--num-calib", type=count(1), metavar="N", help="int8: calibration images used (default 32)")
    parser.add_argument("--eval-on", default="auto", metavar="WHICH",
                        help="configurations to evaluate: auto (all on CUDA, the first that opens on CPU), "
                        "all, first, or backend:precision[,...]")
    parser.add_argument("--compare-images", type=count(1), metavar="N",
                        help="images the compare step judges (default 16; fewer needs --allow-few-images)")
    parser.add_argument("--allow-few-images", action="store_true",
                        help="let the compare step judge fewer than 16 images (the report says so)")
    parser.add_argument("--bench-warmup", type=count(0), metavar="N", help="untimed calls per batch size "
                        "(default 1 on CPU, 10 on CUDA)")
    parser.add_argument("--bench-iters", type=count(1), metavar="N", help="timed calls per batch size "
                        "(default 5 on CPU, 50 on CUDA)")
    if not demo:
        parser.add_argument("--protocol", choices=("single", "multiscale", "multiscale+crf"), default=None,
                            help="wseg-voc only: test protocol (default multiscale+crf, as upstream)")
    parser.add_argument("--skip", type=csv_list, default=[], metavar="STEPS",
                        help="steps to skip (recorded as skipped): export,runtimes,compare,eval,bench")
    parser.add_argument("--force", action="store_true", help="recompute every step instead of resuming")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


class RichReporter:
    """Prints each step as it starts and ends, each configuration's outcome, and bench progress."""

    def __init__(self, console, quiet: bool = False):
        self.console = console
        self.quiet = quiet
        self.show_progress = not quiet
        self._started = 0.0

    def step_started(self, index: int, total: int, name: str, what: str) -> None:
        import time

        self._started = time.perf_counter()
        if not self.quiet:
            self.console.print(f"[bold cyan]▶ [{index}/{total}] {name}[/] — {what}", highlight=False)

    def unit_finished(self, step: str, unit: dict) -> None:
        if self.quiet:
            return
        status = unit.get("status")
        extra = ""
        if step == "compare" and status == "done":
            extra = " — gate " + ("[green]pass[/]" if unit.get("passed") else "[red]FAIL[/]")
        if step == "eval" and status == "done":
            metrics = (unit.get("record") or {}).get("metrics") or {}
            shown = [f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float) and "/" not in k][:3]
            extra = " — " + ", ".join(shown) if shown else ""
        if step == "bench" and status == "done":
            best = max((r for r in (unit.get("report") or {}).get("results", [])),
                       key=lambda r: r["images_per_s"], default=None)
            extra = f" — best {best['images_per_s']:.2f} img/s at batch {best['batch_size']}" if best else ""
        mark = {"done": "[green]✓[/]", "skipped": "[yellow]⤼[/]", "failed": "[red]✗[/]"}.get(status, "?")
        stored = " [dim](stored)[/]" if unit.get("resumed") else ""
        reason = f" [dim]{unit.get('reason')}[/]" if unit.get("reason") else ""
        self.console.print(f"    {mark} {unit.get('label')}{stored}{extra}{reason}", highlight=False)

    def step_finished(self, index: int, total: int, name: str, record: dict) -> None:
        if self.quiet:
            return
        status = record["status"]
        mark = {"done": "[green]✓ done[/]", "skipped": "[yellow]⤼ skipped[/]", "failed": "[red]✗ failed[/]"}[status]
        stored = " (stored, not recomputed)" if record.get("resumed") else ""
        reason = f": {record['reason']}" if record.get("reason") else ""
        self.console.print(f"  {mark}{stored} in {record.get('wall_s') or 0:.1f} s{reason}", highlight=False)

    def message(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"    [dim]{text}[/]", highlight=False)


def print_summary(console, results: dict, run_dir) -> None:
    """The published-vs-measured rows this run could measure, the warnings, and where the report is."""
    from rich import box
    from rich.table import Table

    rows = [r for r in results["published_vs_measured"] if r["measured"] is not None]
    if rows:
        table = Table(title="published vs this run", title_justify="left", box=box.SIMPLE_HEAD)
        for name, justify in (("metric", "left"), ("published on", "left"), ("bs", "right"),
                              ("published", "right"), ("measured", "right"), ("ratio", "right")):
            table.add_column(name, justify=justify)
        for r in rows[:10]:
            digits = 1 if r["metric"] == "images_per_s" else 4
            metric = "img/s" if r["metric"] == "images_per_s" else r["metric"]
            ratio = f"{r['ratio']:.3g}x" if r.get("ratio") is not None else "n/c"
            table.add_row(metric, r["hardware"], str(r.get("batch_size") or "-"), f"{r['published']:.{digits}f}",
                          f"{r['measured']:.{digits}f}", ratio)
        console.print(table)
        if len(rows) > 10:
            console.print(f"[dim]… {len(rows) - 10} more rows in the report (n/c = not comparable)[/]")
    for warning in results["warnings"]:
        console.print(f"[yellow]![/] {warning}", highlight=False)
    console.print(f"report: {run_dir}/report.html (and report.md); data: {run_dir}/results.json", highlight=False)


def _dataset_options(items: list[str]) -> dict:
    from segdeploy.data.registry import parse_value

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--dataset-opt expects KEY=VALUE, got {item!r}")
        options[key.strip().replace("-", "_")] = parse_value(value.strip())
    return options


def run(args) -> int:
    from segdeploy.recipes.options import RunRequest, resolve_options
    from segdeploy.recipes.runner import Runner

    console = make_console()
    asked = RunRequest(
        weights=args.weights, data_root=args.data_root, model=args.model, dataset=args.dataset,
        device=args.device, backends=args.backends, precisions=args.precisions, batch_sizes=args.batch_sizes,
        input_size=args.input_size, limit=args.limit, dataset_options=_dataset_options(args.dataset_opt),
        eval_on=args.eval_on, compare_images=args.compare_images, bench_warmup=args.bench_warmup,
        bench_iters=args.bench_iters, seed=args.seed, protocol=args.protocol,
        model_input_size=args.model_input_size, calib=args.calib, num_calib=args.num_calib,
        allow_few_images=args.allow_few_images)
    options = resolve_options(args.recipe, asked)
    run_dir = args.run_dir or f"runs/{options.recipe}"
    runner = Runner(options, run_dir, force=args.force, skip=tuple(args.skip),
                    reporter=RichReporter(console, args.quiet))
    if not args.quiet:
        console.print(f"[bold]segdeploy run {options.recipe}[/] — model {options.model}, weights {options.weights}, "
                      f"device {options.device} → {run_dir}", highlight=False)
    results = runner.run()
    print_summary(console, results, run_dir)
    return runner.exit_code()
