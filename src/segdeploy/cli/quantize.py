"""segdeploy quantize: int8 post-training quantization with calibration images."""

from __future__ import annotations

from segdeploy.cli.common import count, make_console, model_argument, size_hw, weights_argument

DESCRIPTION = """\
Quantize a model to int8 (ONNX QDQ: int8 per-channel symmetric weights, uint8 per-tensor
activations) with ONNX Runtime static quantization, calibrating on images preprocessed exactly as
at inference. The result runs on ONNX Runtime (CPU) and OpenVINO (CPU) with --precision int8.
Check its fidelity with `segdeploy compare MODEL --precisions int8 --int8-onnx OUT.onnx`.
"""

EPILOG = """\
examples:
  segdeploy quantize u2netp --weights u2netp.pth --calib ECSSD/images -o u2netp.int8.onnx
  segdeploy quantize unetpp_dsb2018 --weights model.pth --calib dsb/images --num-calib 64 \\
      --onnx unetpp.onnx -o unetpp.int8.onnx
"""


def register(sub) -> None:
    import argparse

    parser = sub.add_parser("quantize", help="int8 quantization with calibration images", description=DESCRIPTION,
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_argument(parser)
    weights_argument(parser)
    parser.add_argument("--calib", required=True, metavar="DIR", help="folder of calibration images")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="destination file")
    parser.add_argument("--num-calib", type=count(1), default=None, metavar="N",
                        help="use the first N images of --calib (default: 32)")
    parser.add_argument("--onnx", metavar="FP32.onnx", default=None,
                        help="fp32 ONNX to quantize (default: export model + weights, cached)")
    parser.add_argument("--input-size", type=size_hw, default=None, metavar="HxW",
                        help="squash calibration images to this size instead of the model's preprocessing size")
    parser.add_argument("--calibrate-method", choices=("minmax", "entropy", "percentile"), default="minmax",
                        help="activation range estimation (default: minmax)")
    parser.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor (default: per channel)")
    parser.add_argument("--all-ops", action="store_true",
                        help="quantize every operator type ONNX Runtime can (default: Conv, ConvTranspose, MatMul, Gemm)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path


    from segdeploy.convert.quantize import DEFAULT_OP_TYPES, QuantizeOptions, quantize_onnx

    from segdeploy.core.errors import UsageError

    if not Path(args.calib).is_dir():
        raise UsageError(f"--calib {args.calib}: not a folder; give a folder of calibration images")
    if args.onnx is None and args.weights is None:
        raise UsageError("nothing to quantize: add --weights FILE (the checkpoint to export and quantize; 'random' "
                         "for a trial) or --onnx FILE (an fp32 export)")
    console = make_console()
    options = QuantizeOptions(num_calib=args.num_calib, input_size=args.input_size, per_channel=not args.per_tensor,
                              calibrate_method=args.calibrate_method,
                              op_types=None if args.all_ops else DEFAULT_OP_TYPES)
    result = quantize_onnx(args.model, args.weights, args.calib, args.output, options, onnx_path=args.onnx,
                           seed=args.seed)
    console.print(f"[green]wrote[/] {result.path}: {result.quantized_nodes} quantized tensors, calibrated on "
                  f"{result.num_calib} images from {result.calib_source} ({result.calibrate_method}, "
                  f"{'per-channel' if result.per_channel else 'per-tensor'} weights) in {result.seconds:.1f} s",
                  highlight=False)
    console.print(f"source: {result.source_onnx}", highlight=False)
    return 0
