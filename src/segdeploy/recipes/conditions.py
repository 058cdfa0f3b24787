"""Machine conditions around a timing: load average, CPU frequency, and CPU time used by others.

A timing taken while other processes load the machine measures them as much as the model. The
load average alone cannot tell (it counts this process's own threads too and lags by a minute),
so :func:`watch` also reads ``/proc/stat`` before and after and subtracts this process's own CPU
time: what remains is the CPU time *other* processes used during the timing.

    others_cpu_share = (busy jiffies of the machine - CPU time of this process) / (wall x CPUs)

A timing is *contended* when ``others_cpu_share`` exceeds :data:`CONTENDED_SHARE` (others had
more than a quarter of the machine), or, where ``/proc/stat`` is not readable, when the 1-minute
load average before the timing already exceeded the number of CPUs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from segdeploy.report.results import TimingConditions

#: share of the machine's CPU time used by other processes above which a timing is "contended"
CONTENDED_SHARE = 0.25


def _busy_and_total_s() -> tuple[float, float] | None:
    """Busy and total CPU seconds of the whole machine since boot (``/proc/stat``), or None."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    ticks = [int(v) for v in first[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def cpu_mhz() -> float | None:
    """Mean current frequency of the CPUs in MHz (sysfs cpufreq, else /proc/cpuinfo), or None."""
    values = []
    for path in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_cur_freq"):
        try:
            values.append(int(path.read_text()) / 1000.0)
        except (OSError, ValueError):
            continue
    if not values:
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.lower().startswith("cpu mhz"):
                    values.append(float(line.split(":", 1)[1]))
        except (OSError, ValueError):
            return None
    return round(sum(values) / len(values), 1) if values else None


def _load() -> tuple[float, float, float] | None:
    try:
        return tuple(round(v, 2) for v in os.getloadavg())  # type: ignore[return-value]
    except (OSError, AttributeError):
        return None


class Watch:
    """Filled in by :func:`watch` when the block ends; ``conditions`` is then the record."""

    conditions: TimingConditions | None = None


@contextmanager
def watch() -> Iterator[Watch]:
    """Record :class:`TimingConditions` around the ``with`` block (see the module docstring)."""
    handle = Watch()
    cpus = os.cpu_count() or 1
    load_before, mhz_before = _load(), cpu_mhz()
    machine_before, own_before = _busy_and_total_s(), time.process_time()
    started = time.perf_counter()
    try:
        yield handle
    finally:
        wall = time.perf_counter() - started
        machine_after, own_after = _busy_and_total_s(), time.process_time()
        share = None
        if machine_before and machine_after and wall > 0:
            others = (machine_after[0] - machine_before[0]) - (own_after - own_before)
            share = round(min(1.0, max(0.0, others / (wall * cpus))), 3)
        load_after = _load()
        if share is not None:
            contended = share > CONTENDED_SHARE
            basis = f"other processes used {share:.0%} of the {cpus} CPUs during the timing"
        elif load_before is not None:
            contended = load_before[0] > cpus
            basis = f"1-minute load average {load_before[0]} before the timing on {cpus} CPUs"
        else:
            contended, basis = None, "machine load not readable here"
        handle.conditions = TimingConditions(
            cpus=cpus, wall_s=round(wall, 3), load_before=load_before, load_after=load_after,
            cpu_mhz_before=mhz_before, cpu_mhz_after=cpu_mhz(), others_cpu_share=share,
            contended=contended, basis=basis)
