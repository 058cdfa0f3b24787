"""segdeploy compare: does a backend / precision still give the PyTorch fp32 masks?"""

from __future__ import annotations

from segdeploy.cli.common import csv_list, model_argument, size_hw, weights_argument

DESCRIPTION = """\
Run the model on every backend x precision and compare with PyTorch fp32 (eager, CPU) on the same
inputs: per output max / mean absolute and relative error, cosine similarity, NaN/Inf and
constant outputs; on the decoded masks IoU (binary, saliency) or pixel agreement (semantic), and
with a dataset the change of the task metric. Each row passes or fails against the default
tolerances (see `python -c "import segdeploy.verify.compare as c; help(c)"`), overridable with
--tolerance. Exit code: 0 all compared rows pass; 1 a row fails (or, with --require-all, is
unavailable); 2 nothing could be compared. Unavailable combinations (library, provider or
precision missing) are listed with the reason.
"""

EPILOG = """\
examples:
  segdeploy compare u2netp --weights u2netp.pth --images photos/ --precisions fp32,bf16,int8
  segdeploy compare unetpp_dsb2018 --weights model.pth --dataset dsb2018 --data-root dsb/ --limit 50 \\
      --backends onnxruntime,openvino --precisions fp32,int8 --int8-onnx unetpp.int8.onnx --json cmp.json
  segdeploy compare u2net --weights u2net.pth --images photos/ --backends torch --device cuda \\
      --precisions fp16,bf16 --tolerance bf16.mask_iou=0.99
"""


def register(sub) -> None:
    import argparse

    from segdeploy.data.registry import add_dataset_arguments

    parser = sub.add_parser("compare", help="fidelity of backends / precisions vs PyTorch fp32",
                            description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    model_argument(parser)
    weights_argument(parser)
    parser.add_argument("--backends", type=csv_list, default=["torch", "onnxruntime", "openvino"],
                        help="comma-separated: torch, onnxruntime, openvino (default: all three)")
    parser.add_argument("--precisions", type=csv_list, default=["fp32"],
                        help="comma-separated: fp32, fp16, bf16, int8 (default: fp32)")
    parser.add_argument("--device", default="cpu", help="device of the candidates: cpu | cuda (default: cpu)")
    add_dataset_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=2, metavar="N", help="images per run call (default: 2)")
    parser.add_argument("--input-size", type=size_hw, default=None, metavar="HxW",
                        help="squash images to this size instead of the model's preprocessing size")
    parser.add_argument("--onnx", metavar="PATH", help="fp32 ONNX for onnxruntime / openvino (default: cached export)")
    parser.add_argument("--int8-onnx", metavar="PATH", help="quantized ONNX for int8 rows")
    parser.add_argument("--calib", metavar="DIR", help="calibration images for int8 rows without --int8-onnx "
                        "(default: the compared images themselves, which is optimistic)")
    parser.add_argument("--num-calib", type=int, default=None, metavar="N", help="calibration images used (default 32)")
    parser.add_argument("--tolerance", action="append", default=[], metavar="[PREC.]KEY=VALUE",
                        help="override a tolerance, e.g. mask_iou=0.99 or bf16.map_mae=0.005 or fp32.rel=1e-5 "
                        "(keys: rel, noise_factor, mask_iou, map_mae, pixel_agreement)")
    parser.add_argument("--require-all", action="store_true", help="unavailable combinations count as failures")
    parser.add_argument("--no-noise-floor", action="store_true",
                        help="skip the float64 PyTorch run that measures fp32 rounding noise (fp32 gate = rel only)")
    parser.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    parser.set_defaults(func=run)


def parse_tolerances(items: list[str]) -> dict:
    """["mask_iou=0.99", "bf16.map_mae=0.005"] -> {"fp32": {...}, ...} or a flat dict."""
    from segdeploy.verify.compare import PRECISION_ORDER

    flat: dict = {}
    per: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--tolerance expects [PREC.]KEY=VALUE, got {item!r}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"--tolerance {item!r}: {value!r} is not a number") from None
        prec, dot, name = key.strip().partition(".")
        if dot:
            if prec not in PRECISION_ORDER:
                raise ValueError(f"--tolerance {item!r}: unknown precision {prec!r}")
            per.setdefault(prec, {})[name] = number
        else:
            flat[prec] = number
    if not per:
        return flat
    return {p: {**flat, **per.get(p, {})} for p in PRECISION_ORDER}


def run(args) -> int:
    from rich.console import Console

    from segdeploy.verify.compare import compare, write_report

    console = Console()
    err = Console(stderr=True)
    say = (lambda message: None) if args.quiet else (lambda message: err.print(f"[dim]{message}[/]", highlight=False))
    tolerances = parse_tolerances(args.tolerance)
    common = dict(
        backends=args.backends, precisions=args.precisions, tolerances=tolerances or None, device=args.device,
        batch_size=args.batch_size, input_size=args.input_size, onnx_path=args.onnx, int8_onnx=args.int8_onnx,
        calib=args.calib, num_calib=args.num_calib, require_all=args.require_all,
        noise_floor=not args.no_noise_floor, seed=args.seed, progress=say)
    if args.dataset or (args.images and args.masks):
        from segdeploy.verify.compare import dataset_samples
        from segdeploy.data.registry import layout_from_args

        layout = layout_from_args(args, require_masks=False)
        report = compare(args.model, args.weights, samples=dataset_samples(layout), max_images=args.limit, **common)
    elif args.images:
        report = compare(args.model, args.weights, images=args.images, max_images=args.limit, **common)
    else:
        raise ValueError("give --images DIR, or --dataset LAYOUT --data-root DIR")
    report.render(console)
    if args.json:
        write_report(report, args.json)
        err.print(f"wrote {args.json}", highlight=False)
    if not report.passed:
        return 1
    if not any(r.outputs for r in report.rows):
        err.print("[red]nothing was compared:[/] every combination is unavailable", highlight=False)
        return 2
    return 0
