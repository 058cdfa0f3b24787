"""The peak-memory probe the bound tests and benchmarks rely on measures the command, not its parent."""

from __future__ import annotations

import os
from pathlib import Path

from segdeploy.bench.peak_rss import run_measured

SRC = str(Path(__file__).resolve().parents[1] / "src")
MIB = 1 << 20


def test_a_small_command_started_from_a_big_process_reports_its_own_peak():
    ballast = bytearray(600 * MIB)  # this process is now > 600 MiB resident: a child must not inherit that
    ballast[::4096] = b"\x01" * len(ballast[::4096])
    done = run_measured(["--version"], env=dict(os.environ, PYTHONPATH=SRC), timeout=300)
    assert done.returncode == 0, done.stderr
    assert 10 * MIB < done.peak_rss_bytes < 400 * MIB, done.peak_rss_bytes
    del ballast


def test_a_command_over_the_data_limit_fails_and_its_peak_is_still_reported():
    """Under a data cap smaller than the interpreter needs, the command fails; the probe still reports."""
    done = run_measured(["--version"], data_limit=8 * MIB, env=dict(os.environ, PYTHONPATH=SRC), timeout=300)
    assert done.returncode == 1 and "out of memory under the data limit" in done.stderr
    assert done.peak_rss_bytes > 0
