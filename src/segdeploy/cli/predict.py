"""segdeploy predict: images in, masks out."""

from __future__ import annotations

from segdeploy.cli.common import (count, default_batch_size, make_console, model_argument, printable,
                                  runtime_arguments, torch_arguments, torch_options, weights_argument)
from segdeploy.cli.video import VIDEO_HELP

DESCRIPTION = """\
Predict masks for image files, folders and glob patterns.

Folder mode (-o OUTDIR): for every input, OUTDIR/<relative path>/<stem>.png is written at the
image's original size (as displayed: EXIF orientation applied): saliency models write an 8-bit
map, binary models 0/255, semantic models a palette PNG of class ids. Each input folder is mirrored
under OUTDIR (one folder: its files directly in OUTDIR; several: OUTDIR/<folder name>/...), so two
inputs never share an output; the output folder is never searched for inputs and never replaces
one. OUTDIR/.segdeploy-manifest.json records model, weights sha256, backend, precision and
preprocessing: a rerun with the same settings resumes, one with other settings is refused (exit 2,
nothing touched) unless --overwrite. Every file is written atomically.

One-file mode (one input and -o FILE.png, or - for stdin / stdout): writes exactly that file: the
mask, or the cut-out with --cutout / --bgcolor.
  cat a.jpg | segdeploy predict u2netp - -o - > mask.png

Outputs: the mask only by default (--only-mask says so explicitly); --cutout adds the RGBA cut-out
(<stem>_cutout.png; in one-file mode it replaces the mask); --bgcolor R,G,B[,A] composites the
subject onto that colour (implies --cutout); --save-prob adds <stem>.npy, the float32 map.

Big photos: native-resolution models (wseg_voc, unet_carvana) reduce photos whose longest side
exceeds the model's limit (see 'segdeploy info MODEL', max_input_side) to it, aspect kept; masks are
still written at the original size. --max-size N changes the limit (0 = none); a run estimated to
exceed the machine's memory prints a warning first. Images above --max-pixels fail by name.

Unreadable inputs (corrupt, FIFO, dangling symlink, too large) are reported by name and reason and
counted as failed; the others are processed.
""" + VIDEO_HELP

EPILOG = """\
examples:
  segdeploy predict u2netp photo.jpg -o photo_mask.png
  segdeploy predict u2netp photo.jpg -o cut.png --bgcolor 255,255,255
  segdeploy predict u2net photos/ -o out/ --weights u2net.pth
  segdeploy predict u2netp 'shots/*.png' albums/ --recursive -o out/ --cutout
  segdeploy predict u2netp photos/ -o out/ --backend onnxruntime --precision int8 --calib calib_photos/
  segdeploy predict wseg_voc big.jpg -o big_mask.png --weights model_enc_e020Xs0.928.pth --max-size 1024
  segdeploy predict u2netp clip.mp4 -o out/ --cutout --smooth 5
  segdeploy predict u2netp clip.mp4 -o clip_green.mp4 --bgcolor 0,255,0

exit codes: 0 all written; 1 some inputs failed (named); 2 usage error (nothing written);
  4 runtime error; 130 interrupted (finished files kept, nothing partial).
"""


def _rgba(text: str) -> tuple[int, ...]:
    import argparse

    try:
        parts = tuple(int(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) not in (3, 4) or not all(0 <= p <= 255 for p in parts):
        raise argparse.ArgumentTypeError(f"expected R,G,B or R,G,B,A with values 0..255, got {text!r}")
    return parts


def _size_bytes(text: str) -> int:
    """'512M', '2G', '1.5GiB', or a plain number of MiB."""
    import argparse
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*", text.lower())
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"expected a size like 512M or 2G, got {text!r}")
    return int(float(match.group(1)) * {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "": 1 << 20}[match.group(2)])


def _non_negative(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 0, got {text!r}")
    return value


def register(sub) -> None:
    import argparse

    parser = sub.add_parser("predict", help="predict masks for images", description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    model_argument(parser)
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, glob patterns, or - (stdin)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="folder for the masks; or, for one input, a file (OUT.png) or - (stdout)")
    parser.add_argument("--recursive", action="store_true", help="descend into sub-folders (and ** in patterns)")
    weights_argument(parser)
    runtime_arguments(parser)
    # None: 1 on the CPU, a full GPU batch on CUDA (resolved in run())
    parser.set_defaults(batch_size=None)
    torch_arguments(parser)
    parser.add_argument("--onnx", metavar="FILE", default=None,
                        help="run this ONNX file (e.g. a quantized one from 'segdeploy quantize' or rembg's) with "
                        "--backend onnxruntime or openvino")
    parser.add_argument("--calib", metavar="DIR", default=None,
                        help="calibration images for --precision int8 (quantized once and cached)")
    outputs = parser.add_argument_group("outputs")
    outputs.add_argument("--cutout", action="store_true",
                         help="also write <stem>_cutout.png: the image with the mask as alpha (one-file mode: "
                         "write the cut-out instead of the mask)")
    outputs.add_argument("--bgcolor", type=_rgba, metavar="R,G,B[,A]", default=None,
                         help="cut-out composited onto this colour (implies --cutout)")
    outputs.add_argument("--only-mask", action="store_true",
                         help="write only the mask (the default; refuses --cutout / --bgcolor / --save-prob)")
    outputs.add_argument("--save-prob", action="store_true", help="also write <stem>.npy: the float32 probability map")
    outputs.add_argument("--overwrite", action="store_true",
                         help="recompute outputs that exist, even if made with other settings")
    limits = parser.add_argument_group("big inputs")
    limits.add_argument("--max-size", type=_non_negative, default=None, metavar="N",
                        help="longest side a native-resolution model sees (default: the model's max_input_side; "
                        "0 = no limit); masks stay at the original size")
    limits.add_argument("--max-pixels", type=_non_negative, default=None, metavar="N",
                        help="refuse images with more pixels than this (default: 250000000; 0 = no limit)")
    limits.add_argument("--memory-budget", type=_size_bytes, default=None, metavar="SIZE",
                        help="decoded images held at once by the readers, e.g. 512M, 2G (default: 1G)")
    parser.add_argument("--workers", type=count(1), default=None, metavar="N",
                        help="threads for reading and writing (default: CPU count, at most 8)")
    parser.add_argument("--allow-unverified", action="store_true",
                        help="write masks even when the precision asked for (--precision fp16|bf16|int8) fails its "
                        "fidelity gate against PyTorch fp32; every output is then marked unverified (manifest, "
                        "summary, --json)")
    parser.add_argument("--verbose", action="store_true", help="print every measure of a failed gate")
    parser.add_argument("--json", metavar="PATH", help="write the run summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    from segdeploy.cli.video import video_arguments

    video_arguments(parser)
    # --- scale-out hook (segdeploy.scale; options defined in cli/engine.py) ---
    from segdeploy.cli.engine import engine_arguments

    engine_arguments(parser)
    # --- end scale-out hook ---
    parser.set_defaults(func=run)


def run(args) -> int:
    from segdeploy.core.errors import UsageError
    from segdeploy.core.registry import get_spec
    from segdeploy.jobs.outputs import is_single_file_output
    from segdeploy.jobs.predict import check_json_target
    from segdeploy.zoo.checkpoints import resolve_weights

    spec = get_spec(args.model)
    if args.only_mask and (args.cutout or args.bgcolor or args.save_prob):
        raise UsageError("--only-mask writes the mask alone; drop --cutout / --bgcolor / --save-prob, or --only-mask")
    args.batch_size = default_batch_size(args.device) if args.batch_size is None else args.batch_size
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be ≥ 1, got {args.batch_size}")
    check_json_target(args.json)
    if args.onnx is None:
        resolve_weights(spec, args.weights)  # fail before scanning inputs, with advice on getting the checkpoint
    console = make_console(stderr=True)
    job = predict_options(args)

    # --- video hook: inputs holding clips run through segdeploy.jobs.video (cli/video.py) ---
    from segdeploy.cli.video import run_if_video

    code = run_if_video(args, spec, job, console)
    if code is not None:
        return code
    # --- end video hook ---
    gated = _judged_runtime(args, spec, job, console)
    if isinstance(gated, int):
        return gated
    if "-" in args.inputs or is_single_file_output(args.inputs, args.output):
        return _run_one(args, spec, job, gated, console)
    return _run_many(args, spec, job, gated, console)


def predict_options(args):
    """The job's options from the command line (the video hook runs with the same ones)."""
    from segdeploy.engine.images import DEFAULT_MAX_PIXELS
    from segdeploy.engine.pipeline import DEFAULT_MEMORY_BUDGET
    from segdeploy.jobs.options import PredictOptions, RuntimeRequest

    request = RuntimeRequest(weights=args.weights, backend=args.backend, device=args.device, precision=args.precision,
                             onnx_path=args.onnx, calib=args.calib, seed=args.seed,
                             backend_options=torch_options(args))
    return PredictOptions(runtime=request, batch_size=args.batch_size, workers=args.workers,
                          recursive=args.recursive, cutout=args.cutout, save_prob=args.save_prob,
                          background=args.bgcolor, overwrite=args.overwrite,
                          max_size="spec" if args.max_size is None else args.max_size,
                          max_pixels=DEFAULT_MAX_PIXELS if args.max_pixels is None else (args.max_pixels or None),
                          memory_budget=args.memory_budget or DEFAULT_MEMORY_BUDGET)


def _run_one(args, spec, job, runtime, console) -> int:
    """One input (a file or stdin) to one output file (or stdout)."""
    from segdeploy.core.errors import UsageError
    from segdeploy.jobs.outputs import is_single_file_output
    from segdeploy.jobs.predict import predict_one, write_summary_json

    if len(args.inputs) != 1:
        raise UsageError("- (stdin) is one image; give it alone, with -o FILE.png or -o -")
    if args.inputs[0] == "-" and not is_single_file_output(args.inputs, args.output):
        raise UsageError("- (stdin) gives one image: use -o FILE.png or -o - (stdout)")
    result = predict_one(spec.name, args.inputs[0], args.output, job, runtime=runtime,
                         log=lambda text: console.print(printable(text), highlight=False, markup=False))
    if result.get("selection"):
        sel = result["selection"]
        console.print(f"backend auto → {sel['backend']} {sel['precision']}: {sel['why']}", highlight=False)
    if args.output != "-" and not args.quiet:
        unverified = (result.get("runtime") or {}).get("unverified")
        console.print(printable(f"written {args.output}") + (" — UNVERIFIED (--allow-unverified)" if unverified
                                                             else ""), highlight=False, markup=False)
    _random_note(console, result.get("weights"))
    if args.json:
        write_summary_json(result, args.json)
    return 0


def _run_many(args, spec, job, runtime, console) -> int:
    """Files, folders and patterns into an output folder, on the local engine or on Ray."""
    from pathlib import Path

    from rich.markup import escape

    from segdeploy.cli.engine import job_engine, ray_note
    from segdeploy.core.errors import UsageError
    from segdeploy.engine.finder import IMAGE_SUFFIXES
    from segdeploy.jobs.predict import write_summary_json

    if args.output == "-":
        raise UsageError("-o - (stdout) takes one image; give a single input file or -")
    if Path(args.output).suffix.lower() in IMAGE_SUFFIXES and not Path(args.output).is_dir():
        raise UsageError(f"-o {args.output} names an image file, but the inputs ({' '.join(args.inputs)}) may hold "
                         "many images; give one input file for one output file, or a folder for -o")
    # --- scale-out hook: --engine ray runs the same job on a Ray cluster (segdeploy.scale.engine) ---
    engine = job_engine(args, "predict")
    if engine.name != "local" and (args.onnx is not None or args.calib is not None):
        raise UsageError("--onnx / --calib run with the local engine only; drop them or --engine ray")
    # --- end scale-out hook ---
    summary = engine.predict_files(spec.name, args.inputs, args.output, job, progress=not args.quiet, runtime=runtime,
                                   log=lambda text: console.print(printable(text), highlight=False, markup=False))
    if ray_note(summary.stages):
        console.print(ray_note(summary.stages), highlight=False)
    if summary.selection:
        console.print(f"backend auto → {summary.selection['backend']} {summary.selection['precision']}: "
                      f"{summary.selection['why']}", highlight=False)
    for failure in summary.failed:
        console.print("[red]failed[/] " + escape(printable(f"{failure['path']}: {failure['reason']}")),
                      highlight=False)
    speed = f", {summary.images_per_s:.1f} images/s" if summary.images_per_s else ""
    if getattr(summary, "load_seconds", 0):
        speed += f" (after {summary.load_seconds:.1f} s opening the model)"
    unverified = (summary.runtime or {}).get("unverified")
    console.print(f"found {summary.found}, written {summary.written}, skipped {summary.skipped} (already done), "
                  f"failed {len(summary.failed)} in {summary.seconds:.1f} s{speed}"
                  + (" — UNVERIFIED outputs (--allow-unverified)" if unverified else ""), highlight=False)
    _random_note(console, summary.weights)
    if args.json:
        write_summary_json(summary, args.json)
    return 1 if summary.failed else 0


def _judged_runtime(args, spec, job, console):
    """The runtime of a precision the user asked for (fp16 / bf16 / int8), opened and judged
    against PyTorch fp32; None when nothing is to judge; an exit code (3) when the gate fails
    without --allow-unverified. The Ray engine opens its runtimes in its workers: not judged here."""
    from segdeploy.jobs.session import open_model_runtime
    from segdeploy.verify.runtime_gate import JUDGED_PRECISIONS, judge_runtime

    if args.precision not in JUDGED_PRECISIONS or getattr(args, "engine", "local") == "ray":
        return None
    runtime = open_model_runtime(spec.name, job.runtime)
    if not args.quiet:
        console.print(f"judging {runtime.name} {args.precision} against PyTorch fp32 (the precision asked for)…",
                      highlight=False)
    verdict = judge_runtime(spec, runtime, weights=args.weights, seed=args.seed, device=args.device)
    if verdict.passed:
        if not args.quiet:
            console.print(verdict.one_line(), highlight=False)
        return runtime
    if args.verbose:
        for failure in verdict.failures:
            console.print(f"gate failure: {failure}", highlight=False, soft_wrap=True)
        console.print("measures: " + ", ".join(f"{k} {v:.4g}" for k, v in verdict.measures.items()), highlight=False)
    if not args.allow_unverified:
        console.print(f"[red]gate failed:[/] {runtime.name} {verdict.one_line()}. Nothing written; pass "
                      "--allow-unverified to write these masks anyway (marked unverified)"
                      + ("" if args.verbose else ", --verbose for every measure"), highlight=False, soft_wrap=True)
        return 3
    runtime.unverified = f"{runtime.name} {verdict.one_line()}"
    console.print(f"[yellow]unverified:[/] {runtime.unverified}; writing anyway (--allow-unverified)",
                  highlight=False, soft_wrap=True)
    return runtime


def _random_note(console, weights) -> None:
    if weights and weights.get("kind") == "random":
        console.print("[yellow]note:[/] random weights — these masks are meaningless; pass the official "
                      "checkpoint with --weights to get real predictions.")
