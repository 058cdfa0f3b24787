"""segdeploy's own errors, and the exit code each one means.

Every error a user can fix derives from :class:`SegdeployError` and is printed by the CLI as one
line naming the input and the fix. Any other exception is a bug in segdeploy and is shown with its
traceback, never disguised as a user error.

Exit codes (the same in every command; README "Exit codes"):

====  =====================================================================================
0     all good
1     some inputs could not be read or decoded (each one named); the rest were processed
2     usage error: bad option, unknown model, missing or unfit weights, unusable path
3     a fidelity gate failed (the converted model does not keep the masks)
4     a runtime error (out of memory, device lost, backend crash): the run stopped, nothing
      was counted as skipped
130   interrupted (Ctrl-C)
====  =====================================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INPUTS_FAILED = 1
EXIT_USAGE = 2
EXIT_FIDELITY_FAILED = 3
EXIT_RUNTIME = 4
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_OK: "all good",
    EXIT_INPUTS_FAILED: "some inputs could not be read or decoded (named in the output)",
    EXIT_USAGE: "usage error (bad option, unknown model, unfit weights, unusable path)",
    EXIT_FIDELITY_FAILED: "a fidelity gate failed",
    EXIT_RUNTIME: "runtime error (out of memory, device lost, backend failure); the run stopped",
    EXIT_INTERRUPTED: "interrupted",
}


def exit_code_table() -> str:
    """The exit-code table as text, for ``--help`` epilogs."""
    return "exit codes:\n" + "\n".join(f"  {code:<4}{text}" for code, text in EXIT_CODES.items())


class SegdeployError(Exception):
    """Base of every error the user can act on. ``exit_code`` is what the CLI returns for it."""

    exit_code: int = EXIT_USAGE


class UsageError(SegdeployError, ValueError):
    """A bad argument or option value (the message names it and says what is accepted)."""


class ModelNotFound(UsageError, KeyError):
    """An unknown model name (the message lists close matches and the known names)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class WeightsError(UsageError):
    """A checkpoint cannot be used for the requested model."""


class DatasetError(UsageError):
    """A dataset root does not match its expected layout (the message says what is missing)."""


class RuntimeUnavailable(SegdeployError, RuntimeError):
    """The requested backend, device, provider or precision cannot run here (the message says why)."""


class ImageReadError(SegdeployError, ValueError):
    """One input image could not be read; the run goes on and exits 1."""

    exit_code = 1

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class GateFailed(SegdeployError):
    """A fidelity gate failed: the converted model does not keep the masks (exit 3)."""

    exit_code = EXIT_FIDELITY_FAILED


class InferenceError(SegdeployError):
    """The runtime failed while running (out of memory, device lost, ...). The run stops (exit 4);
    items are never counted as skipped because of it."""

    exit_code = EXIT_RUNTIME


class OutputSpaceError(SegdeployError):
    """The output's filesystem is full (or over quota): every later write would fail too, so the run
    stops (exit 4) instead of failing each remaining input."""

    exit_code = EXIT_RUNTIME
    #: the streaming loop stops at the first such error instead of going on with the next input
    fatal = True

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}; free space there or choose another output folder")
        self.path = str(path)


def is_user_error(exc: BaseException) -> bool:
    """True for errors printed as one line: segdeploy's own, and OS errors on a user's path."""
    if isinstance(exc, SegdeployError):
        return True
    return isinstance(exc, OSError) and getattr(exc, "filename", None) is not None


def exit_code_of(exc: BaseException) -> int:
    """The CLI exit code for an exception that :func:`is_user_error` accepts."""
    return getattr(exc, "exit_code", EXIT_USAGE)
