#!/usr/bin/env python3
"""How long README's commands take: ``make demo`` and ``make test``, the venv already made; and
issue 22's third: ``segdeploy eval wseg_voc --dataset voc2012 --limit 1`` on a small generated
VOC tree (the tests' own), empty cache, default backend (auto), within 5 minutes.

Issue 22's line: README's durations are true within 30 % on an idle 2-core machine. Each command
runs as README gives it, in a subprocess: the demo with an empty ``SEGDEPLOY_CACHE`` (what a fresh
machine has) into a temporary folder, the test command in the repository. Recorded per command:
wall time, its own CPU time (user + sys of the children), exit status, and the load average before
and after — a wall time taken while other processes ran measures them too, so the file says so.

Writes ``benchmarks/results/durations_cpu.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from _common import RESULTS, timed_command

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"


def timed(command: list[str], env: dict[str, str]) -> dict:
    """Run ``command`` in the repository; its wall and CPU seconds, exit status and load."""
    run = timed_command(command, env, cwd=REPO)
    return {"command": " ".join(command), "wall_s": round(run.wall_s, 1), "cpu_s": round(run.cpu_s, 1),
            "exit": run.done.returncode, "load_before": run.load_before, "load_after": run.load_after,
            "output_tail": run.done.stdout[-800:] + run.done.stderr[-800:]}


WSEG_EVAL = "segdeploy eval wseg_voc --dataset voc2012 --limit 1"


def wseg_eval_command(tmp: Path) -> list[str]:
    """The wseg evaluation of one image, on the generated VOC tree tests/test_auto_budget.py uses."""
    sys.path.insert(0, str(REPO))
    from tests.helpers_datasets import make_voc_tree

    root = make_voc_tree(tmp / "VOCdevkit", n=4)
    return [str(BIN / "segdeploy"), "eval", "wseg_voc", "--dataset", "voc2012", "--data-root", str(root),
            "--limit", "1", "--weights", "random", "--json", str(tmp / "wseg_eval.json"), "--quiet"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("demo", "test", "wseg-eval"), default=None,
                        help="time one command only (the other rows of the result file are kept)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    from segdeploy.core.environment import environment
    from segdeploy.engine.writers import atomic_write_text

    rows = {}
    with tempfile.TemporaryDirectory(prefix="segdeploy-durations-") as tmp:
        env = {**os.environ, "SEGDEPLOY_CACHE": str(Path(tmp) / "cache"), "MPLBACKEND": "Agg"}
        if args.only in (None, "demo"):
            rows["make demo"] = timed([str(BIN / "segdeploy"), "demo", "-o", str(Path(tmp) / "demo")], env)
        if args.only in (None, "test"):
            rows["make test"] = timed(["make", "test"], {**os.environ, "MPLBACKEND": "Agg"})
        if args.only in (None, "wseg-eval"):
            wseg_env = {**env, "SEGDEPLOY_CACHE": str(Path(tmp) / "wseg-cache")}
            rows[WSEG_EVAL] = timed(wseg_eval_command(Path(tmp)), wseg_env)
    if args.only is not None and (args.out_dir / "durations_cpu.json").exists():
        kept = json.loads((args.out_dir / "durations_cpu.json").read_text()).get("rows", {})
        rows = {**{name: row for name, row in kept.items() if name not in rows}, **rows}
    payload = {"benchmark": "durations", "cpus": os.cpu_count(), "rows": rows, "environment": environment()}
    lines = ["# How long README's commands take", "",
             f"{os.cpu_count()} CPUs ({payload['environment'].get('cpu')}; "
             f"{', '.join(payload['environment'].get('cpu_features') or []) or 'no VNNI/AVX-512/AMX'}); the venv "
             "already made (its creation is a one-time pip install); the demo and the eval each on an empty "
             "cache, as on a fresh machine.", "",
             "| command | wall | CPU s (user + sys) | exit | load before → after (1/5/15 min) |",
             "|---|---|---|---|---|"]
    for name, row in rows.items():
        minutes, seconds = divmod(row["wall_s"], 60)
        lines.append(f"| `{name}` | {int(minutes)} min {seconds:.0f} s | {row['cpu_s']:.0f} | {row['exit']} | "
                     f"{row['load_before']} → {row['load_after']} |")
    if any(row["load_before"][0] > (os.cpu_count() or 1) for row in rows.values()):
        lines += ["", "Some commands started with the 1-minute load above the CPU count: their wall time measures "
                  "the other processes too."]
    atomic_write_text(args.out_dir / "durations_cpu.json", json.dumps(payload, indent=2, default=str) + "\n")
    atomic_write_text(args.out_dir / "durations_cpu.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(row["exit"] == 0 for row in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
