"""segdeploy demo: the U²-Net recipe end to end on generated images, random weights, CPU, in minutes."""

from __future__ import annotations

from segdeploy.cli.run import add_run_arguments

#: What the demo runs. Sized to finish in under 3 minutes on 2 CPU cores (see docs/run.md): the
#: benchmark's runtime warm-up (2 calls per batch size) happens anyway, so no extra warm-up calls.
DEMO_RECIPE = "u2net-ecssd"
DEMO_MODEL = "u2netp"
DEMO_IMAGES = 6
DEMO_SEED = 0
DEMO_BATCH_SIZES = (1, 2)
DEMO_BACKENDS = ("torch", "onnxruntime", "openvino")
DEMO_PRECISIONS = ("fp32",)
DEMO_COMPARE_IMAGES = 16  # the fidelity gate judges at least 16 images
DEMO_BENCH_WARMUP = 0
DEMO_BENCH_ITERS = 3

DESCRIPTION = f"""\
Run the whole pipeline of `segdeploy run {DEMO_RECIPE}` with nothing to download: {DEMO_IMAGES}
photo-like images with ground-truth masks are generated deterministically into RUN_DIR/data (ECSSD
layout), the model gets deterministic random weights (seed {DEMO_SEED}), and everything runs on the
CPU: ONNX export, ONNX Runtime and OpenVINO beside PyTorch, fidelity against PyTorch fp32, accuracy,
a small benchmark (batch {', '.join(map(str, DEMO_BATCH_SIZES))}), and the report.

The demo uses U²-Netp ({DEMO_MODEL}, same architecture family and recipe as U²-Net, 1.1 M
parameters) so that it finishes in under 3 minutes on 2 cores; `--model u2net` runs the full
44 M-parameter U²-Net instead (several times slower on a CPU).

With random weights the accuracy figures are meaningless: the demo shows the pipeline, the
fidelity checks and the speed. For real numbers download the official weights and run the recipe.
"""


def register(sub) -> None:
    import argparse

    parser = sub.add_parser("demo", help="the U²-Net recipe on generated images with random weights (CPU, minutes)",
                            description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEMO_MODEL, choices=("u2netp", "u2net"),
                        help=f"U²-Net variant (default {DEMO_MODEL})")
    parser.add_argument("--images", type=int, default=DEMO_IMAGES, metavar="N",
                        help=f"generated images (default {DEMO_IMAGES})")
    add_run_arguments(parser, demo=True)
    parser.set_defaults(func=run)


def meaningless_notice(model: str) -> str:
    """The plain statement the demo prints (and the report carries) about its accuracy numbers."""
    from segdeploy.core.registry import get_spec

    spec = get_spec(model)
    return (f"The demo's weights are random (seed {DEMO_SEED}), so its accuracy figures (maxF, MAE, ...) are "
            f"meaningless; its fidelity and speed figures are real. To measure the real model: "
            f"{spec.how_to_get} Then: segdeploy run {DEMO_RECIPE} --model {model} --weights "
            f"{spec.official.file_name} --data-root ECSSD/ (ECSSD: images/ + ground_truth_mask/).")


def run(args) -> int:
    import time
    from pathlib import Path

    from rich.console import Console
    from rich.panel import Panel

    from segdeploy.recipes.demo import write_demo_dataset
    from segdeploy.recipes.runner import Runner, resolve_options
    from segdeploy.cli.run import RichReporter, print_summary

    console = Console()
    started = time.perf_counter()
    run_dir = Path(args.run_dir or "runs/demo")
    notice = meaningless_notice(args.model)
    if not args.quiet:
        console.print(Panel(notice, title="segdeploy demo", border_style="yellow"))
    data_root = write_demo_dataset(run_dir / "data", args.images, seed=DEMO_SEED)
    options = resolve_options(
        DEMO_RECIPE, weights="random", data_root=str(data_root), model=args.model, dataset="ecssd",
        device=args.device or "cpu", backends=args.backends or DEMO_BACKENDS,
        precisions=args.precisions or DEMO_PRECISIONS, batch_sizes=args.batch_sizes or DEMO_BATCH_SIZES,
        input_size=args.input_size, limit=args.images, eval_on=args.eval_on,
        compare_images=args.compare_images or DEMO_COMPARE_IMAGES,
        bench_warmup=DEMO_BENCH_WARMUP if args.bench_warmup is None else args.bench_warmup,
        bench_iters=DEMO_BENCH_ITERS if args.bench_iters is None else args.bench_iters, seed=DEMO_SEED,
        model_input_size=args.model_input_size, calib=args.calib, num_calib=args.num_calib,
        allow_few_images=args.allow_few_images)
    demo = {"images": args.images, "seed": DEMO_SEED, "data_root": str(data_root),
            "generator": "segdeploy.recipes.demo.write_demo_dataset", "notice": notice}
    runner = Runner(options, run_dir, force=args.force, skip=tuple(args.skip),
                    reporter=RichReporter(console, args.quiet), demo=demo)
    results = runner.run()
    if not args.quiet:
        print_summary(console, results, run_dir)
        console.print(Panel(notice, title="about these numbers", border_style="yellow"))
        console.print(f"demo finished in {time.perf_counter() - started:.1f} s", highlight=False)
    return runner.exit_code()
