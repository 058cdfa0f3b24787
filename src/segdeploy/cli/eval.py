"""segdeploy eval: a model's accuracy on a dataset, by the seed guide's protocol."""

from __future__ import annotations

from segdeploy.cli.common import (count, make_console, model_argument, runtime_arguments, size_hw, torch_arguments,
                                  torch_options, weights_argument)

DESCRIPTION = """\
Score a model on a dataset read as distributed (ECSSD, DUTS-TE, MSRA-B, HKU-IS, PASCAL-S,
DUT-OMRON, any --images/--masks pair, Carvana, DSB2018, VOC2012).

Saliency models: maxF, meanF, adpF, MAE, S-measure, E-measure, weighted F (PySODMetrics
conventions). Binary: Dice and IoU, per-image mean (headline) and pooled. Semantic: mIoU over 21
classes (headline) and 20 foreground classes. Predictions are made at the ground truth's size;
the ground truth is never resized. The JSON record names the weights (sha256), the split, the
images counted and skipped (with reasons), the metric definitions and the runtime.
"""

EPILOG = """\
examples:
  segdeploy eval u2net --dataset ecssd --data-root ECSSD/ --weights u2net.pth --json ecssd.json
  segdeploy eval unet_carvana --dataset carvana --data-root carvana/ --weights unet_carvana_scale0.5_epoch2.pth
  segdeploy eval unetpp_dsb2018_nearest --dataset dsb2018 --data-root dsb2018_96/ --weights nested_unet.pth
  segdeploy eval wseg_voc --dataset voc2012 --data-root VOCdevkit/ --weights model_enc_e020Xs0.928.pth \\
      --protocol multiscale+crf
"""


def register(sub) -> None:
    import argparse

    from segdeploy.core.errors import exit_code_table

    parser = sub.add_parser("eval", help="score a model on a dataset", description=DESCRIPTION,
                            epilog=EPILOG + "\n" + exit_code_table(),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    model_argument(parser)
    parser.add_argument("--dataset", required=True, help="dataset layout name, or 'pairs' with --images/--masks")
    parser.add_argument("--data-root", help="dataset folder as distributed")
    parser.add_argument("--images", help="with --dataset pairs: folder of images")
    parser.add_argument("--masks", help="with --dataset pairs: folder of masks (matched by file stem)")
    parser.add_argument("--split-file", help="text file of ids to score (overrides the default split)")
    # --dataset-opt is the spelling of compare and run; --option is kept as an alias
    parser.add_argument("--dataset-opt", "--option", dest="option", action="append", default=[], metavar="KEY=VALUE",
                        help="dataset reader option (repeatable), e.g. split=val, encoding=binary")
    weights_argument(parser)
    runtime_arguments(parser)
    torch_arguments(parser)
    parser.add_argument("--limit", type=count(1), metavar="N", help="score only the first N images")
    parser.add_argument("--save-masks", metavar="DIR", help="write the scored masks (<id>.png)")
    parser.add_argument("--json", metavar="PATH", help="write the evaluation record")
    parser.add_argument("--protocol", choices=("single", "multiscale", "multiscale+crf"), default="multiscale+crf",
                        help="semantic models only: upstream wseg test protocol (default: multiscale+crf)")
    parser.add_argument("--pad-size", type=size_hw, default=(1024, 1024), metavar="HxW",
                        help="semantic multiscale: canvas size of each view (default 1024x1024, upstream)")
    parser.add_argument("--scales", default="1,0.5,1.5,2", help="semantic multiscale: scales (default 1,0.5,1.5,2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    # --- scale-out hook (segdeploy.scale; options defined in cli/engine.py) ---
    from segdeploy.cli.engine import engine_arguments

    engine_arguments(parser)
    # --- end scale-out hook ---
    parser.set_defaults(func=run)


def run(args) -> int:
    from rich.table import Table

    from segdeploy.jobs.evaluate import write_record
    from segdeploy.jobs.options import EvalOptions, RuntimeRequest

    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--dataset-opt expects KEY=VALUE, got {item!r}")
        options[key] = value
    if args.split_file:
        options["split_file"] = args.split_file
    root = args.data_root
    if args.dataset == "pairs":
        if not (args.images and args.masks):
            raise ValueError("--dataset pairs needs --images DIR and --masks DIR")
        options.update(images=args.images, masks=args.masks)
        root = root or args.images
    elif not root:
        raise ValueError("--data-root is required (the dataset folder as distributed)")
    protocol = {"name": args.protocol, "scales": tuple(float(s) for s in args.scales.split(",")),
                "pad_size": tuple(args.pad_size)}
    request = RuntimeRequest(weights=args.weights, backend=args.backend, device=args.device, precision=args.precision,
                             seed=args.seed, backend_options=torch_options(args))
    job = EvalOptions(runtime=request, batch_size=args.batch_size, limit=args.limit, save_masks=args.save_masks,
                      layout_options=options, protocol=protocol)
    # --- scale-out hook: --engine ray scores shards on a Ray cluster and merges them (segdeploy.scale.engine) ---
    from segdeploy.cli.engine import job_engine, ray_note

    record = job_engine(args, "eval").evaluate(args.model, args.dataset, root, job, progress=not args.quiet)
    # --- end scale-out hook ---
    console = make_console()
    table = Table(title=f"{record['model']} on {record['dataset'].get('dataset', args.dataset)}: "
                        f"{record['images_scored']} images scored, {record['images_skipped']} skipped")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in record["metrics"].items():
        if not key.startswith("IoU/"):
            table.add_row(key, f"{value:.4f}")
    console.print(table)
    if ray_note(record.get("stages")):  # scale-out hook
        console.print(ray_note(record["stages"]), highlight=False)
    for item in record["skipped"]:
        console.print(f"[yellow]skipped[/] {item['file']}: {item['reason']}", highlight=False)
    if record["weights"] and record["weights"].get("kind") == "random":
        console.print("[yellow]note:[/] random weights — these scores are meaningless; pass the official "
                      "checkpoint with --weights.")
    if args.json:
        write_record(record, args.json)
        console.print(f"record written to {args.json}")
    if record["images_skipped"] or not record["images_scored"]:
        return 1  # some inputs (images or masks) could not be read or do not fit: named above
    return 0
