"""segdeploy export: PyTorch checkpoint -> simplified, annotated, parity-checked ONNX."""

from __future__ import annotations

from segdeploy.cli.common import count, make_console, model_argument, positive_number, size_hw, weights_argument

DESCRIPTION = """\
Export a model to ONNX (opset 17 by default) with a dynamic batch axis and, where the network
allows, dynamic height and width; simplify it with onnxslim; store the model's preprocessing and
decoding specs, the weights' sha256 and the segdeploy version in the file's metadata; and check it
against PyTorch on a seeded batch of 2 through ONNX Runtime. The numbers go to OUT.json beside the
file. Nothing is written when the parity check fails (exit code 1).
"""

EPILOG = """\
examples:
  segdeploy export u2net --weights u2net.pth -o u2net.onnx
  segdeploy export unetpp_dsb2018 --weights model.pth -o unetpp.onnx --input-size 96
  segdeploy export wseg_voc --weights random -o wseg.onnx --input-size 512x512 --static-spatial
"""


def register(sub) -> None:
    import argparse

    parser = sub.add_parser("export", help="export a model to ONNX (parity-checked)", description=DESCRIPTION,
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_argument(parser)
    weights_argument(parser)
    parser.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="destination file")
    parser.add_argument("--opset", type=count(7), default=17, help="ONNX opset (default: 17)")
    parser.add_argument("--input-size", type=size_hw, default=None, metavar="HxW",
                        help="size traced and parity-checked (default: the model's input size)")
    parser.add_argument("--static-batch", action="store_true", help="fix the batch axis at 2 (default: dynamic)")
    parser.add_argument("--static-spatial", action="store_true",
                        help="fix height and width at --input-size (default: dynamic where the network allows)")
    parser.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    parser.add_argument("--no-parity", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    parser.add_argument("--parity-rtol", type=positive_number, default=None, metavar="R",
                        help="largest accepted relative error per output (default: 1e-3)")
    parser.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                        help="torch.onnx exporter (default: torchscript; dynamo writes opset >= 18)")
    parser.add_argument("--json", metavar="PATH", help="also write the export record here (OUT.json is always written)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from rich.table import Table

    from segdeploy.convert.export import DEFAULT_PARITY_RTOL, ExportOptions, ExportParityError, export_onnx
    from segdeploy.engine.writers import atomic_write_text

    console = make_console()
    err = make_console(stderr=True)
    try:
        options = ExportOptions(
            opset=args.opset, input_size=args.input_size, dynamic_batch=not args.static_batch,
            dynamic_spatial=False if args.static_spatial else None, simplify=not args.no_simplify,
            check_parity=not args.no_parity,
            parity_rtol=args.parity_rtol if args.parity_rtol is not None else DEFAULT_PARITY_RTOL,
            exporter=args.exporter)
        result = export_onnx(args.model, args.weights, args.output, options, seed=args.seed)
        failed = False
    except ExportParityError as exc:
        result, failed = exc.result, True
        err.print(f"[red]parity check failed:[/] {exc}", highlight=False)

    console.print(f"{'[red]not written[/]' if failed else '[green]wrote[/]'} {result.path} "
                  f"({result.file_bytes / 2**20:.1f} MiB, opset {result.opset}, {result.exporter} exporter, "
                  f"{result.nodes_before} -> {result.nodes_after} nodes{'' if result.simplified else ', not simplified'}, "
                  f"{result.seconds:.1f} s)", highlight=False)
    axes = ", ".join(f"{axis}={label}" for axis, label in result.dynamic_axes.get("input", {}).items()) or "none"
    console.print(f"input {result.input_name} {list(result.input_shape)} dynamic axes: {axes}", highlight=False)
    if result.parity is not None:
        parity = result.parity
        table = Table(title=f"parity vs PyTorch fp32 ({parity.runtime}, input {list(parity.input_shape)})")
        for col in ("output", "shape", "max abs err", "rel err", "cosine"):
            table.add_column(col, justify="left" if col == "output" else "right")
        for o in parity.outputs:
            table.add_row(o.name, "x".join(map(str, o.shape)), f"{o.max_abs:.2e}", f"{o.rel:.2e}", f"{o.cosine:.8f}")
        console.print(table)
    for note in result.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    if args.json:
        atomic_write_text(args.json, result.to_json())
    return 1 if failed else 0
