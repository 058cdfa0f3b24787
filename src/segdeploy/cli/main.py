"""The ``segdeploy`` command: a thin layer over the Python API.

Each subcommand lives in ``segdeploy/cli/<name>.py`` and defines ``register(subparsers)``.
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
    from segdeploy.cli.common import OneLineParser

    parser = OneLineParser(
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


#: Seconds an interrupted run waits for forward passes, decodes and writes in flight (Ctrl-C must
#: end the process within 2 s, and opening the runtime may not have returned the prompt yet).
INTERRUPT_GRACE_S = 0.5


def _leave_after_interrupt(code: int) -> None:
    """End an interrupted run: let work in flight land, then leave without tearing libraries down.

    By the time this runs the pipeline has stopped feeding work and the manifest records every
    finished file. Worker threads still inside a call (a forward pass in OpenVINO, ONNX Runtime or
    libtorch, a PNG being written) get :data:`INTERRUPT_GRACE_S` to return. The process then
    leaves with ``os._exit``, after the ``atexit`` handlers, deleting the temporary files of writes
    still in progress and flushing the standard streams: a normal interpreter exit would tear the
    C++ runtimes down under a thread still running in them ("terminate called without an active
    exception", SIGABRT), and even when none is running that teardown alone takes over a second on
    a loaded 2-core machine, beyond the promise of 130 within 2 s. Every output is written
    atomically, so nothing partial stays behind.
    """
    import atexit
    import os

    from segdeploy.engine.inference_threads import wait_for_workers
    from segdeploy.engine.writers import remove_partial_files

    wait_for_workers(INTERRUPT_GRACE_S)
    remove_partial_files()
    try:
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001 - a failing handler must not turn Ctrl-C into a traceback
        pass
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
        code = int(args.func(args) or 0)
        # Flush here, inside the handler: a reader that went away (`| head`) must end in the
        # BrokenPipeError branch below, not in Python's "Exception ignored" message at exit.
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        # Finished files are complete (atomic writes) and recorded; the items in flight are abandoned.
        print("interrupted", file=sys.stderr)
        _leave_after_interrupt(130)
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
            from segdeploy.cli.common import printable

            print(printable(f"segdeploy {args.command}: error: {exc}"), file=sys.stderr)
            _leave_if_workers_stay(exit_code_of(exc))
            return exit_code_of(exc)
        from segdeploy.engine.inference_threads import wait_for_workers

        if not wait_for_workers(INTERRUPT_GRACE_S):  # a bug, while a forward pass still runs
            import traceback

            traceback.print_exc()
            _leave_after_interrupt(1)
        raise


def _leave_if_workers_stay(code: int) -> None:
    """After an error that stopped a run with a forward pass or a write still in flight: leave as an
    interrupted run does (see :func:`_leave_after_interrupt`) when the workers do not end in time;
    otherwise return, and the process (or the Python caller of :func:`main`) goes on normally."""
    from segdeploy.engine.inference_threads import wait_for_workers

    if not wait_for_workers(INTERRUPT_GRACE_S):
        _leave_after_interrupt(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
