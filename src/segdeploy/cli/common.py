"""Arguments shared by several subcommands, so that they read the same everywhere."""

from __future__ import annotations

import argparse


class BackendsHelp(str):
    """A help text whose ``{backends}`` becomes the registered backends when help is printed (building
    the parser loads no backend plugin)."""

    def __mod__(self, params):
        from segdeploy.backends import backend_names

        return str(self).replace("{backends}", " | ".join(backend_names())) % params


def make_console(stderr: bool = False):
    """A rich console that wraps lines only on a terminal: into a file or a pipe each message stays on
    one line, so that a log can be searched for what it says."""
    from rich.console import Console

    console = Console(stderr=stderr)
    console.soft_wrap = not console.is_terminal
    return console


def model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="registry name (see 'segdeploy list')")


def weights_argument(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument(
        "--weights", metavar="PATH|random", default=default,
        help="official checkpoint file as published (plain state_dict; 'module.' prefix and 'mask_values' "
        "tolerated), or 'random' for deterministic random weights (outputs then say so)"
        + (f" (default: {default})" if default else ""))
    parser.add_argument("--seed", type=count(0), default=0, help="seed of --weights random (default: 0)")


def runtime_arguments(parser: argparse.ArgumentParser, batch_default: int = 1) -> None:
    parser.add_argument("--backend", default="auto", type=backend_name,
                        help=BackendsHelp("auto | {backends} (default: auto = the fastest backend and precision "
                                          "whose fidelity gate passes for this model on this device; it prints "
                                          "its choice)"))
    parser.add_argument("--device", default="cpu", type=device_name,
                        help="cpu | cuda (default: cpu); never silently falls back")
    parser.add_argument("--precision", default=None, type=precision_name,
                        help="fp32 | fp16 | bf16 | int8 (default: fp32, or the auto choice with --backend auto)")
    parser.add_argument("--batch-size", type=count(1), default=batch_default, metavar="N",
                        help=f"images per forward pass (default: {batch_default} on the CPU, 64 on CUDA)")


def default_batch_size(device: str, cpu_default: int = 1) -> int:
    """Images per forward pass when the user gives none: a GPU is kept busy by batches of 64
    (u2netp on an H200: 210 images/s at batch 1, 1,350 at 64)."""
    return 64 if str(device).startswith("cuda") else cpu_default


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


# --- option values checked while parsing: a bad one is a one-line usage error (exit 2) before any
# model opens, instead of a ValueError deep in a backend ---

_PRECISIONS = ("fp32", "fp16", "bf16", "int8")


def _one_of(kind: str, text: str, known) -> str:
    if text not in known:
        raise argparse.ArgumentTypeError(f"unknown {kind} {text!r}; choose from {', '.join(known)}")
    return text


def _backends() -> list[str]:
    from segdeploy.backends.base import backend_names

    return backend_names()


def backend_name(text: str) -> str:
    """A backend the registry knows, or ``auto``."""
    return _one_of("backend", text, ["auto", *_backends()])


def precision_name(text: str) -> str:
    return _one_of("precision", text, _PRECISIONS)


def precision_or_auto(text: str) -> str:
    """A precision, or ``auto`` (bench: the one ``--backend auto`` chooses)."""
    return _one_of("precision", text, [*_PRECISIONS, "auto"])


def device_name(text: str) -> str:
    """cpu, cuda, cuda:N (and ``auto`` where a command allows it: checked by its own code)."""
    if text in ("cpu", "cuda", "auto") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"unknown device {text!r}; choose cpu, cuda or cuda:N")


def backend_list(text: str) -> list[str]:
    known = _backends()
    return [_one_of("backend", name, known) for name in csv_list(text)] or _empty("backends")


def precision_list(text: str) -> list[str]:
    return [precision_name(name) for name in csv_list(text)] or _empty("precisions")


def _empty(what: str):
    raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}")


def count(minimum: int):
    """An argparse type: a whole number ≥ ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number ≥ {minimum}, got {text!r}")
        return value

    parse.__name__ = f"count_from_{minimum}"
    return parse


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


class OneLineParser(argparse.ArgumentParser):
    """Usage errors in one line (``segdeploy predict: error: ...``), exit 2, with where to read more;
    argparse's default prints the whole usage block first."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def printable(text: str) -> str:
    """``text`` safe to print on any stream: bytes of a file name that are not UTF-8 (held by
    ``os.fsdecode`` as lone surrogates) shown as ``\\xff`` escapes instead of failing the write."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
