"""segdeploy compare: does a backend / precision still give the PyTorch fp32 masks?"""

from __future__ import annotations

from segdeploy.cli.common import (BackendsHelp, backend_list, count, device_name, make_console, model_argument,
                                  precision_list, size_hw, weights_argument)
from segdeploy.core.errors import exit_code_table

DESCRIPTION = """\
Run the model on every backend x precision and judge it against PyTorch fp32 (eager, CPU) on the
same images, through the same pipeline predict uses. Per image: the task's measures on the decoded
mask (saliency: map MAE and IoU of the map at 0.5; binary: mask IoU and pixel agreement; semantic:
pixel agreement and class-score error) and the tensor error of every output decoding or the
model's test-time protocol reads (|out - ref| <= atol x scale + rtol x |ref|). The gate holds on the
5th percentile over images AND on the worst image, with thresholds written once per task x
precision (docs/verification.md says what each one means and why); --tolerance overrides them.
At least 16 images are judged (--allow-few-images for fewer; marked in the report). int8 without
--int8-onnx or --calib is calibrated on a quarter of the images and judged on the others.

--save-reference REF.npz stores the fp32 reference (outputs, image ids, weights and preprocessing
fingerprints); --reference REF.npz judges a backend against it on another machine, and refuses a
reference made from other weights or preprocessing.
"""

EPILOG = """\
examples:
  segdeploy compare u2netp --weights u2netp.pth --images photos/ --precisions fp32,bf16,int8 --calib calib/
  segdeploy compare u2netp --weights u2netp.pth --images photos/ --backends torch --save-reference ref.npz
  segdeploy compare u2netp --weights u2netp.pth --images photos/ --backends openvino --precisions bf16 \\
      --reference ref.npz
  segdeploy compare unetpp_dsb2018 --weights model.pth --dataset dsb2018 --data-root dsb/ --limit 50 \\
      --backends onnxruntime,openvino --precisions fp32,int8 --int8-onnx unetpp.int8.onnx --json cmp.json

"""


def register(sub) -> None:
    import argparse

    from segdeploy.data.registry import add_dataset_arguments

    parser = sub.add_parser("compare", help="fidelity of backends / precisions vs PyTorch fp32",
                            description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.epilog = EPILOG + exit_code_table()
    model_argument(parser)
    weights_argument(parser)
    parser.add_argument("--backends", type=backend_list, default=None,
                        help=BackendsHelp("comma-separated, of {backends} (default: every one)"))
    parser.add_argument("--precisions", type=precision_list, default=["fp32"],
                        help="comma-separated: fp32, tf32 (CUDA), fp16, bf16, int8 (default: fp32; on CUDA fp32 "
                        "runs without TF32)")
    parser.add_argument("--device", default="cpu", type=device_name, help="device of the candidates: cpu | cuda (default: cpu)")
    add_dataset_arguments(parser)
    parser.add_argument("--batch-size", type=count(1), default=2, metavar="N", help="images per run call (default: 2)")
    parser.add_argument("--input-size", type=size_hw, default=None, metavar="HxW",
                        help="squash images to this size instead of the model's preprocessing size")
    parser.add_argument("--onnx", metavar="PATH", help="fp32 ONNX for onnxruntime / openvino (default: cached export)")
    parser.add_argument("--int8-onnx", metavar="PATH", help="quantized ONNX for int8 rows")
    parser.add_argument("--calib", metavar="DIR", help="calibration images for int8 rows without --int8-onnx "
                        "(default: a quarter of the given images, which are then not judged)")
    parser.add_argument("--num-calib", type=count(1), default=None, metavar="N", help="calibration images used (default 32)")
    parser.add_argument("--tolerance", action="append", default=[], metavar="[PREC.]KEY=VALUE",
                        help="override a gate threshold, e.g. mask_iou=0.99 (5th percentile and worst image), "
                        "bf16.map_mae.worst=0.03, fp32.rtol=1e-5 (keys: rtol, atol, tensor_quantile and the "
                        "task's measures, each also as MEASURE.quantile / MEASURE.worst)")
    parser.add_argument("--allow-few-images", action="store_true",
                        help="judge fewer than 16 images (quantiles are then close to the worst image; the "
                        "report says so)")
    parser.add_argument("--save-reference", metavar="REF.npz",
                        help="store the PyTorch fp32 reference outputs of these images (with image ids and the "
                        "weights / preprocessing fingerprints) to judge backends elsewhere")
    parser.add_argument("--reference", metavar="REF.npz",
                        help="judge against this stored reference instead of running PyTorch fp32 here")
    parser.add_argument("--require-all", action="store_true", help="unavailable combinations count as failures")
    parser.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    parser.set_defaults(func=run)


def parse_tolerances(items: list[str]) -> dict:
    """["mask_iou=0.99", "bf16.map_mae.worst=0.005"] -> {"fp32": {...}, ...} or a flat dict."""
    from segdeploy.core.errors import UsageError
    from segdeploy.verify.compare import PRECISION_ORDER

    flat: dict = {}
    per: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--tolerance expects [PREC.]KEY=VALUE, got {item!r}")
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"--tolerance {item!r}: {value!r} is not a number") from None
        key = key.strip()
        prec, dot, name = key.partition(".")
        if dot and prec in PRECISION_ORDER:
            per.setdefault(prec, {})[name] = number
        elif dot and prec.startswith(("fp", "bf", "int", "tf")):
            raise UsageError(f"--tolerance {item!r}: unknown precision {prec!r}; "
                             f"choose from {', '.join(PRECISION_ORDER)}")
        else:
            flat[key] = number
    if not per:
        return flat
    return {p: {**flat, **per.get(p, {})} for p in PRECISION_ORDER}


def run(args) -> int:
    from segdeploy.backends import backend_names
    from segdeploy.core.errors import UsageError
    from segdeploy.verify.compare import CompareOptions, compare, write_report

    console = make_console()
    err = make_console(stderr=True)
    say = (lambda message: None) if args.quiet else (lambda message: err.print(f"[dim]{message}[/]", highlight=False))
    tolerances = parse_tolerances(args.tolerance)
    options = CompareOptions(
        backends=args.backends or backend_names(), precisions=args.precisions, tolerances=tolerances or None,
        device=args.device, require_all=args.require_all, max_images=args.limit, input_size=args.input_size,
        batch_size=args.batch_size, seed=args.seed, allow_few_images=args.allow_few_images, onnx_path=args.onnx,
        int8_onnx=args.int8_onnx, calib=args.calib, num_calib=args.num_calib, reference=args.reference,
        save_reference=args.save_reference)
    if args.dataset or (args.images and args.masks):
        from segdeploy.verify.inputs import dataset_samples
        from segdeploy.data.registry import layout_from_args

        layout = layout_from_args(args, require_masks=False)
        report = compare(args.model, args.weights, options, samples=dataset_samples(layout), progress=say)
    elif args.images:
        report = compare(args.model, args.weights, options, images=args.images, progress=say)
    else:
        raise UsageError("give --images DIR, or --dataset LAYOUT --data-root DIR")
    report.render(console)
    if args.json:
        write_report(report, args.json)
        err.print(f"wrote {args.json}", highlight=False)
    code = report.exit_code()
    if code == 2:
        err.print("[red]nothing was compared:[/] every combination is unavailable", highlight=False)
    return code
