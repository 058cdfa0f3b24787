"""The ``segdeploy`` command: a thin layer over the Python API.

Each subcommand lives in ``segdeploy/commands/<name>.py`` and defines ``register(subparsers)``.
Command modules import torch / onnxruntime / openvino only inside their ``run`` functions, so
``segdeploy --help`` and ``segdeploy list`` start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from segdeploy import __version__

# Order is the order shown by --help: the seed guide's steps, then the one-command recipes.
COMMANDS = ("list", "info", "predict", "export", "quantize", "compare", "eval", "bench", "prepare", "run", "demo", "serve",
            "auto")

EPILOG = """\
typical session:
  segdeploy demo                                    # trained U²-Netp on bundled photos: every backend checked
  segdeploy list                                    # the model zoo
  segdeploy predict u2net photos/ -o masks/ --weights u2net.pth
  segdeploy export u2net --weights u2net.pth -o u2net.onnx
  segdeploy compare u2netp --weights u2netp.pth --backends onnxruntime,openvino --images photos/
  segdeploy eval u2net --dataset ecssd --data-root ECSSD/ --weights u2net.pth
  segdeploy bench u2netp --backend openvino --batch-sizes 1,4,8
  segdeploy run u2net-ecssd --data-root ECSSD/ --weights u2net.pth -o runs/u2net

'segdeploy COMMAND --help' explains each command.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segdeploy",
        description="Segmentation models from PyTorch checkpoint to fast, verified deployment: rebuild, "
        "export, convert, compare, evaluate, benchmark.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"segdeploy {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"segdeploy.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"segdeploy.cli.{name}":
                continue  # command not part of this build
            raise
        module.register(sub)
    return parser


def _exit_if_inference_busy(code: int) -> None:
    """Leave at once when a forward pass is still running in the inference thread.

    Interpreter shutdown would otherwise wait for the kernel, or abort when the C++ runtime's
    threads are torn down under it ("terminate called without an active exception"). Every output
    file is written atomically, so nothing partial stays behind.
    """
    import os
    import threading

    if any(t.name == "segdeploy-infer" and t.is_alive() for t in threading.enumerate()):
        from segdeploy.engine.writers import remove_partial_files

        remove_partial_files()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        from segdeploy.verify.auto_gate import install

        install()  # --backend auto judges candidates with compare's gate
        code = int(args.func(args) or 0)
        # Flush here, inside the handler: a reader that went away (`| head`) must end in the
        # BrokenPipeError branch below, not in Python's "Exception ignored" message at exit.
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        # Finished files are complete (atomic writes); the item in flight is abandoned. The
        # inference thread is a daemon, so exiting does not wait for a long forward pass.
        print("interrupted", file=sys.stderr)
        _exit_if_inference_busy(130)
        return 130
    except BrokenPipeError:
        # `segdeploy list | head`: the reader went away; say nothing more and don't let Python
        # complain while flushing stdout at exit.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:  # segdeploy's own errors get one clear line; bugs keep their traceback
        from segdeploy.core.errors import exit_code_of, is_user_error

        if is_user_error(exc) and not getattr(args, "debug", False):
            print(f"segdeploy {args.command}: error: {exc}", file=sys.stderr)
            return exit_code_of(exc)
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
