"""segdeploy predict: images in, masks out."""

from __future__ import annotations

from segdeploy.cli.common import model_argument, runtime_arguments, weights_argument

DESCRIPTION = """\
Predict masks for image files, folders and glob patterns.

For every input, OUTDIR/<relative path>/<stem>.png is written at the image's original size
(as displayed: EXIF orientation applied): saliency models write an 8-bit map, binary models 0/255,
semantic models a palette PNG of class ids. Outputs that already exist are skipped (the run
resumes) unless --overwrite. Every file is written atomically. Unreadable inputs are reported
by name and reason and skipped; the exit code is 1 when any input failed.
"""

EPILOG = """\
examples:
  segdeploy predict u2net photo.jpg -o out/ --weights u2net.pth
  segdeploy predict u2netp 'shots/*.png' albums/ --recursive -o out/ --weights random --cutout
  segdeploy predict unet_carvana cars/ -o masks/ --weights unet_carvana_scale0.5_epoch2.pth \\
      --backend openvino --batch-size 4
"""


def register(sub) -> None:
    import argparse

    parser = sub.add_parser("predict", help="predict masks for images", description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    model_argument(parser)
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the masks")
    parser.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    weights_argument(parser)
    runtime_arguments(parser)
    parser.add_argument("--cutout", action="store_true",
                        help="also write <stem>_cutout.png: the image with the mask as alpha (saliency, binary)")
    parser.add_argument("--save-prob", action="store_true", help="also write <stem>.npy: the float32 probability map")
    parser.add_argument("--overwrite", action="store_true", help="recompute outputs that already exist")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="threads for reading and writing (default: CPU count, at most 8)")
    parser.add_argument("--json", metavar="PATH", help="write the run summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    # --- scale-out hook (segdeploy.scale; options defined in cli/engine.py) ---
    from segdeploy.cli.engine import engine_arguments

    engine_arguments(parser)
    # --- end scale-out hook ---
    parser.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console

    from segdeploy.jobs.predict import predict_files, write_summary_json
    from segdeploy.core.registry import get_spec

    spec = get_spec(args.model)
    # fail before scanning inputs, with advice on getting the checkpoint
    from segdeploy.zoo.checkpoints import resolve_weights

    resolve_weights(spec, args.weights)
    console = Console(stderr=True)
    # --- scale-out hook: --engine ray runs the same job on a Ray cluster (segdeploy.scale.predict) ---
    from segdeploy.cli.engine import check_local_only, ray_note, ray_options

    check_local_only(args, "predict")
    if args.engine == "ray":
        from segdeploy.scale.predict import predict_files_ray

        summary = predict_files_ray(spec.name, args.inputs, args.output, options=ray_options(args),
                                    weights=args.weights, recursive=args.recursive, batch_size=args.batch_size,
                                    backend=args.backend, device=args.device, precision=args.precision,
                                    cutout=args.cutout, save_prob=args.save_prob, overwrite=args.overwrite,
                                    progress=not args.quiet, seed=args.seed)
        if ray_note(summary.stages):
            console.print(ray_note(summary.stages), highlight=False)
    else:  # --- end scale-out hook ---
        summary = predict_files(spec.name, args.inputs, args.output, weights=args.weights, recursive=args.recursive,
                                batch_size=args.batch_size, backend=args.backend, device=args.device,
                                precision=args.precision, cutout=args.cutout, save_prob=args.save_prob,
                                overwrite=args.overwrite, workers=args.workers, progress=not args.quiet,
                                seed=args.seed)
    if summary.selection:
        console.print(f"backend auto → {summary.selection['backend']} {summary.selection['precision']}: "
                      f"{summary.selection['why']}", highlight=False)
    for failure in summary.failed:
        console.print(f"[red]failed[/] {failure['path']}: {failure['reason']}", highlight=False)
    speed = f", {summary.images_per_s:.1f} images/s" if summary.images_per_s else ""
    console.print(f"found {summary.found}, written {summary.written}, skipped {summary.skipped} (already done), "
                  f"failed {len(summary.failed)} in {summary.seconds:.1f} s{speed}", highlight=False)
    if summary.weights and summary.weights.get("kind") == "random":
        console.print("[yellow]note:[/] random weights — these masks are meaningless; pass the official "
                      "checkpoint with --weights to get real predictions.")
    if args.json:
        write_summary_json(summary, args.json)
    return 1 if summary.failed else 0

