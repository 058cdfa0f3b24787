"""auto's budget (issue 22, Build 1): on an empty cache the choice costs seconds, not a probe, and
the job's own size decides its duration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers_datasets import make_voc_tree

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_eval_wseg_voc_limit_1_on_an_empty_cache_ends_within_5_minutes(tmp_path):
    """`segdeploy eval wseg_voc --dataset voc2012 --limit 1` with `--backend auto` (the default)
    and an empty cache: no timed probe, no calibration; the export of the ResNet-38 is either
    used or, when its parity check fails on random weights, said in one line before PyTorch runs.
    The 5-minute bound is asserted on a machine that is not overloaded (load ≤ CPUs)."""
    root = make_voc_tree(tmp_path / "VOCdevkit", n=4)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SEGDEPLOY_CACHE": str(tmp_path / "cache"),
           "SEGDEPLOY_AUTO_PROBE": "1"}
    out = tmp_path / "record.json"
    started, load = time.perf_counter(), os.getloadavg()[0]
    done = subprocess.run([sys.executable, "-m", "segdeploy.cli.main", "eval", "wseg_voc", "--dataset", "voc2012",
                           "--data-root", str(root), "--limit", "1", "--weights", "random", "--json", str(out),
                           "--quiet"], env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "[1/" not in done.stderr  # no probe of candidates
    record = json.loads(out.read_text())
    assert record["images_scored"] == 1
    if record["runtime"]["backend"] == "torch":
        assert "parity check" in done.stderr  # the export failed: said, not silent
    print(f"eval wseg_voc --limit 1: {wall:.0f} s, load {load:.1f} → {os.getloadavg()[0]:.1f}, "
          f"ran {record['runtime']['backend']} {record['runtime'].get('precision')}")
    if max(load, os.getloadavg()[0]) <= (os.cpu_count() or 1):
        # The choice is seconds and the export of the 138 M-parameter network ~1.5 min; the job is 8
        # views of 1024² per image, split over the OpenVINO streams (one per core): 217 s in all on
        # the idle 2-core Xeon (benchmarks/results/durations_cpu.md), 396 s with one stream working.
        assert wall <= 300, f"{wall:.0f} s, over 5 minutes on {os.cpu_count()} cores"
