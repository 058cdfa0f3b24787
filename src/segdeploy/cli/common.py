"""Arguments shared by several subcommands, so that they read the same everywhere."""

from __future__ import annotations

import argparse


class BackendsHelp(str):
    """A help text whose ``{backends}`` becomes the registered backends when help is printed (building
    the parser loads no backend plugin)."""

    def __mod__(self, params):
        from segdeploy.backends import backend_names

        return str(self).replace("{backends}", " | ".join(backend_names())) % params


def model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="registry name (see 'segdeploy list')")


def weights_argument(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument(
        "--weights", metavar="PATH|random", default=default,
        help="official checkpoint file as published (plain state_dict; 'module.' prefix and 'mask_values' "
        "tolerated), or 'random' for deterministic random weights (outputs then say so)"
        + (f" (default: {default})" if default else ""))
    parser.add_argument("--seed", type=int, default=0, help="seed of --weights random (default: 0)")


def runtime_arguments(parser: argparse.ArgumentParser, batch_default: int = 1) -> None:
    parser.add_argument("--backend", default="auto",
                        help=BackendsHelp("auto | {backends} (default: auto = the fastest backend and precision "
                                          "whose fidelity gate passes for this model on this device; it prints "
                                          "its choice)"))
    parser.add_argument("--device", default="cpu", help="cpu | cuda (default: cpu); never silently falls back")
    parser.add_argument("--precision", default=None,
                        help="fp32 | fp16 | bf16 | int8 (default: fp32, or the auto choice with --backend auto)")
    parser.add_argument("--batch-size", type=int, default=batch_default, metavar="N",
                        help=f"images per forward pass (default: {batch_default})")


def csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def size_hw(text: str) -> tuple[int, int]:
    """'320' or '320x480' (height x width)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected HxW like 320x320, got {text!r}")
    return parts[0], parts[1]


def torch_arguments(parser: argparse.ArgumentParser) -> None:
    """PyTorch backend options: how the module runs and its memory format."""
    parser.add_argument("--torch-mode", choices=("eager", "compile", "cudagraphs"), default=None,
                        help="PyTorch backend: eager (default), compile (torch.compile, one static graph per "
                        "batch bucket, compiled during warm-up) or cudagraphs (CUDA: replay captured graphs, "
                        "at most 8 shapes kept)")
    parser.add_argument("--channels-last", action="store_true",
                        help="PyTorch backend: NHWC memory format for module and input")


def torch_options(args: argparse.Namespace) -> dict:
    """Runtime options of the torch backend from :func:`torch_arguments` (empty when none were given)."""
    options: dict = {}
    if getattr(args, "torch_mode", None):
        options["mode"] = args.torch_mode
    if getattr(args, "channels_last", False):
        options["channels_last"] = True
    return options
