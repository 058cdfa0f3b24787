"""Peak memory of one ``segdeploy`` command, measured in a process of its own.

``python -m segdeploy.bench.peak_rss [--data-limit BYTES] ARGS...`` runs ``segdeploy ARGS...``,
optionally under an address-space cap (``RLIMIT_DATA``: a command that tries to allocate past it
fails instead of swapping the machine), and prints ``PEAK_RSS_KIB <n>`` on stderr last.

The peak is ``VmHWM`` of the command's own address space. ``getrusage(...).ru_maxrss`` is not
used: Linux carries it across ``fork`` and ``exec``, so a child started from a large process (a
test runner that has exported a dozen models holds gigabytes) reports its parent's peak instead
of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

from segdeploy.bench.memory import host_peak_rss_bytes

MARKER = "PEAK_RSS_KIB"


@dataclass(frozen=True)
class PeakRun:
    """What :func:`run_measured` saw: exit code, the command's peak RSS in bytes, its stderr."""

    returncode: int
    peak_rss_bytes: int
    stderr: str


def run_measured(argv: list[str], *, data_limit: int | None = None, env: dict[str, str] | None = None,
                 timeout: float = 900) -> PeakRun:
    """Run ``segdeploy *argv`` in a fresh interpreter and return its exit code, peak RSS and stderr."""
    command = [sys.executable, "-m", "segdeploy.bench.peak_rss"]
    if data_limit is not None:
        command += ["--data-limit", str(int(data_limit))]
    done = subprocess.run([*command, *map(str, argv)], env=env if env is not None else dict(os.environ),
                          capture_output=True, text=True, timeout=timeout)
    lines = [line for line in done.stderr.splitlines() if line.startswith(MARKER)]
    if not lines:
        raise RuntimeError(f"segdeploy {' '.join(map(str, argv))} ended (exit {done.returncode}) without reporting "
                           f"its peak memory:\n{done.stderr[-2000:]}")
    return PeakRun(done.returncode, int(lines[-1].split()[1]) * 1024, done.stderr)


def _main(args: list[str]) -> int:
    import resource
    import runpy

    if args[:1] == ["--data-limit"]:
        limit = int(args[1])
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        args = args[2:]
    sys.argv = ["segdeploy", *args]
    code: int | str | None = 0
    try:
        runpy.run_module("segdeploy.cli.main", run_name="__main__")
    except SystemExit as exc:
        code = exc.code
    except MemoryError:
        # what the cap is for: the command could not get the memory it asked for. Said, and the
        # peak still reported, so a caller sees how far it got.
        print("segdeploy: out of memory under the data limit", file=sys.stderr)
        code = 1
    peak = host_peak_rss_bytes() or 0
    print(MARKER, peak // 1024, file=sys.stderr, flush=True)
    return code if isinstance(code, int) else (0 if code is None else 1)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
