"""segdeploy demo: the trained U²-Netp on bundled photographs, every backend and precision verified."""

from __future__ import annotations

from segdeploy.cli.common import make_console
from segdeploy.cli.run import add_run_arguments
from segdeploy.recipes.demo_run import (
    DEMO_BACKENDS,
    DEMO_BATCH_SIZES,
    DEMO_BENCH_ITERS,
    DEMO_BENCH_WARMUP,
    DEMO_EXCLUDE,
    DEMO_GENERATED_IMAGES,
    DEMO_MODEL,
    DEMO_PRECISIONS,
    DEMO_RECIPE,
    DEMO_SEED,
)

DESCRIPTION = f"""\
Show what segdeploy does, with nothing to download: the trained U²-Netp (its official weights
ship with the package) cuts out the subjects of a few photographs that ship with it too
(public-domain / CC0, credits in the report), and every way of running it on this CPU is checked
against PyTorch fp32:

  backends {', '.join(DEMO_BACKENDS)} x precisions {', '.join(DEMO_PRECISIONS)} (bf16 only where the CPU has it)
  export -> open each -> fidelity gate on 20 images (the photographs and 3 crops of each)
  -> benchmark (batch {', '.join(map(str, DEMO_BATCH_SIZES))}; {DEMO_BENCH_WARMUP} warm-up + {DEMO_BENCH_ITERS} timed calls) -> report

The report (RUN_DIR/report.html, report.md, results.json) opens with the answer in words: the
cut-outs (RUN_DIR/cutouts), made with what `--backend auto` runs on this machine (the same choice
as predict, serve and Session), the fastest faithful configuration, and what was not faithful and
on which image and measure; then one line per configuration.

Other models have no packaged weights: `segdeploy run RECIPE --weights random` runs them with
random weights, and says so.

Exit code: 0 when a configuration passes the gate (the one --backend auto uses); the failing ones
are the demo's findings, listed in the report (`segdeploy run` and `compare` exit 3 on them).
"""


def register(sub) -> None:
    import argparse

    parser = sub.add_parser("demo", help="trained U²-Netp on bundled photos: every backend/precision verified, "
                            "timed, cut-outs written (CPU, minutes)",
                            description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEMO_MODEL, choices=("u2netp", "u2net"),
                        help=f"U²-Net variant (default {DEMO_MODEL}; u2net needs --weights u2net.pth)")
    parser.add_argument("--weights", metavar="PATH|official|random", default=None,
                        help="default: the packaged official weights of the model; 'random' for random weights")
    parser.add_argument("--photos", metavar="DIR", default=None,
                        help="a folder with photos.json ([{file, subject, title, credit, licence}]) and the images "
                        "(default: the photographs bundled with segdeploy)")
    add_run_arguments(parser, demo=True)
    parser.set_defaults(func=run)


def _photos(args, run_dir, console):
    """(photos, folder, note): the bundled (or --photos) photographs, else generated images."""
    from pathlib import Path

    from segdeploy.recipes.demo import write_demo_dataset
    from segdeploy.recipes.demo_run import Photo, bundled_photos

    photos, why = bundled_photos(args.photos)
    if photos:
        return photos, str(Path(photos[0].path).parent), ""
    if args.photos:
        raise FileNotFoundError(f"--photos {args.photos}: {why}")
    root = write_demo_dataset(Path(run_dir) / "data", DEMO_GENERATED_IMAGES, seed=DEMO_SEED)
    images = sorted((root / "images").iterdir())
    photos = [Photo(file=p.name, path=str(p), subject=True, title=f"generated image {p.stem}",
                    credit="segdeploy.recipes.demo (generated)", licence="Apache-2.0") for p in images]
    return photos, str(root / "images"), (f"{why}: using {len(photos)} generated photo-like images instead "
                                          "(reinstall segdeploy to get the photographs).")


def run(args) -> int:
    import time
    from pathlib import Path

    from rich.panel import Panel

    from segdeploy.backends import auto_choice
    from segdeploy.recipes.demo_run import cpu_has_bf16, demo_answer, demo_weights, judged_images, write_cutouts
    from segdeploy.recipes.options import RunRequest, resolve_options
    from segdeploy.recipes.runner import Config, Runner
    from segdeploy.cli.run import RichReporter
    from segdeploy.report.document import read_document

    console = make_console()
    started = time.perf_counter()
    run_dir = Path(args.run_dir or "runs/demo")
    photos, folder, photo_note = _photos(args, run_dir, console)
    weights, weights_note = demo_weights(args.model, args.weights)
    notice = " ".join(t for t in (weights_note, photo_note,
                                  f"{len(photos)} photograph(s) from {folder}; credits below.") if t)
    if not args.quiet:
        style = "yellow" if weights == "random" or photo_note else "green"
        console.print(Panel(notice, title="segdeploy demo", border_style=style))
    precisions = tuple(args.precisions or DEMO_PRECISIONS)
    bf16_note = ""
    if not args.precisions and "bf16" in precisions and not cpu_has_bf16():
        precisions = tuple(p for p in precisions if p != "bf16")
        bf16_note = "This CPU has no bf16 (no AVX512_BF16 or AMX), so bf16 is not run."
    judged_dir, judged_count, judged_note = judged_images(photos, folder, run_dir)
    notice = " ".join(t for t in (notice, bf16_note, judged_note) if t)
    asked = RunRequest(
        weights=weights, model=args.model, device=args.device or "cpu", backends=args.backends or DEMO_BACKENDS,
        precisions=precisions, batch_sizes=args.batch_sizes or DEMO_BATCH_SIZES, input_size=args.input_size,
        compare_images=args.compare_images or judged_count, eval_on=args.eval_on,
        bench_warmup=DEMO_BENCH_WARMUP if args.bench_warmup is None else args.bench_warmup,
        bench_iters=DEMO_BENCH_ITERS if args.bench_iters is None else args.bench_iters, seed=DEMO_SEED,
        model_input_size=args.model_input_size, calib=args.calib, num_calib=args.num_calib, images=judged_dir,
        exclude=DEMO_EXCLUDE,
        # fewer images than the gate's minimum only when the photographs are missing: said in the notice
        allow_few_images=args.allow_few_images or judged_count < 16)
    options = resolve_options(DEMO_RECIPE, asked)
    demo = {"notice": notice, "photos_dir": folder, "cutouts": [], "weights_note": weights_note,
            "configuration": None}
    runner = Runner(options, run_dir, force=args.force, skip=tuple(dict.fromkeys(("eval", *args.skip))),
                    reporter=RichReporter(console, args.quiet), demo=demo,
                    skip_reasons={"eval": "the demo's photographs have no ground-truth masks, so accuracy is not "
                                          "measured; `segdeploy run u2net-ecssd --data-root ECSSD/` scores it"})
    runner.run()
    report_now = read_document(runner.results)
    verdict = report_now.verdict
    choice = verdict.choice
    # The cut-outs are made with what `--backend auto` runs here: the same cached choice as
    # predict, serve and Session (one code path), not a second ranking of the demo's own table.
    auto = auto_choice(runner.module(), args.device or "cpu")
    config = Config(auto.backend, auto.precision)
    demo["configuration"] = config.label
    demo["auto"] = f"--backend auto runs {auto.backend} {auto.precision} here"
    demo["cutouts"] = write_cutouts(runner, config, photos, run_dir)
    demo["notice"] = notice + f" Cut-outs made with {config.label}, what `--backend auto` runs on this machine."
    demo["answer"] = demo_answer(report_now, auto, weights == "random")
    report = read_document(runner.finish(demo))
    if not args.quiet:
        console.print(f"[bold]{demo['answer']}[/]", highlight=False)
        console.print(f"Verdict: {verdict.headline}", highlight=False)
        for line in verdict.lines:
            colour = "red" if line.startswith("FAIL") else ("green" if line.startswith(("pass", "reference"))
                                                           else "yellow")
            console.print(f"  [{colour}]{line}[/]", highlight=False)
        for warning in report.warnings:
            console.print(f"[yellow]![/] {warning}", highlight=False)
        console.print(f"cut-outs: {run_dir}/cutouts/ ({len(photos)} files, {config.label}); report: "
                      f"{run_dir}/report.html (and report.md); data: {run_dir}/results.json", highlight=False)
        console.print(f"demo finished in {time.perf_counter() - started:.1f} s", highlight=False)
    code = runner.exit_code()
    if code == 3 and choice is not None:
        # The demo shows which configurations keep the masks: failing ones are its findings, in the
        # report. It succeeds when a configuration passes (the one auto uses); `segdeploy run` and
        # `compare` exit 3 on any failed gate.
        return 0
    return code
