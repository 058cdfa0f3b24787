#!/usr/bin/env python3
"""`segdeploy predict` with the default backend (auto) against `--backend torch`, on this CPU.

Issue 9's acceptance line: ``segdeploy predict u2netp DIR -o OUT --weights random`` with no
``--backend`` runs the auto choice, prints it, and is at least 2.5x faster in images/s than the
same command with ``--backend torch``.

What is run: the real CLI (``python -m segdeploy.cli.main predict ...``) in a subprocess, on a
folder of JPEG photos (640x480, made from scikit-image's sample photos, or generated photo-like
images when those are missing), ``--overwrite`` so every image is computed, ``--json`` for the
run summary. images/s is the summary's (images written / wall time of the streaming loop, after
the model is loaded); the command's whole wall time (interpreter start, imports, model load) is
recorded too. One untimed auto run first fills the probe cache (its choice, its table and its
duration are recorded); then ``--rounds`` interleaved rounds (auto, torch, auto, torch, ...).
Load average is read before and after every run: other engineers share these 2 cores, and a run
whose 1-minute load exceeds the number of CPUs is marked "under contention".

Writes ``benchmarks/results/auto_vs_torch_cpu.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, load_average, photo_folder

REPO = Path(__file__).resolve().parents[1]
TARGET = 2.5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="u2netp")
    parser.add_argument("--images", type=int, default=24, help="JPEG photos in the folder (default 24)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--name", default="auto_vs_torch_cpu", help="result file stem")
    parser.add_argument("--quick", action="store_true", help="4 images, 1 round: proves the script works")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.rounds = 4, 1
    return args


def predict(model: str, folder: Path, out: Path, backend: str | None, env: dict) -> dict:
    """One `segdeploy predict` run; returns its summary, printed choice line and timings."""
    summary_path = out / "summary.json"
    cmd = [sys.executable, "-m", "segdeploy.cli.main", "predict", model, str(folder), "-o", str(out / "masks"),
           "--weights", "random", "--overwrite", "--quiet", "--json", str(summary_path)]
    if backend:
        cmd += ["--backend", backend]
    before = load_average()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - t0
    after = load_average()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    summary = json.loads(summary_path.read_text())
    choice_lines = [line for line in proc.stderr.splitlines() if line.startswith("backend auto")]
    return {"backend_arg": backend or "(default)", "images_per_s": summary["images_per_s"],
            "written": summary["written"], "loop_seconds": summary["seconds"], "command_wall_s": round(wall, 2),
            "runtime": summary.get("runtime"), "selection": summary.get("selection"), "stages": summary.get("stages"),
            "printed_choice": choice_lines, "load_before": before, "load_after": after,
            "contended": max(before[0], after[0]) > (os.cpu_count() or 1)}


def markdown(payload: dict) -> str:
    env = payload["environment"]
    sel = payload["probe_run"].get("selection") or {}
    lines = [
        f"# `segdeploy predict {payload['model']}`: default (auto) vs `--backend torch` — {payload['date']}",
        "",
        f"- machine: {env.get('cpu')} ({env.get('cpu_count')} logical CPUs); packages: "
        + ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items() if v),
        f"- input: {payload['images']} JPEG photos 640x480 ({payload['photos']}); `--weights random`, batch 1, "
        "`--overwrite`; images/s from the run summary (streaming loop, model loaded); command wall time "
        "includes interpreter start and model load",
        f"- auto printed: {'; '.join(payload['probe_run']['printed_choice']) or '—'}",
        f"- probe (first auto run, untimed): {payload['probe_run']['command_wall_s']} s command wall; "
        f"source {sel.get('source')} (static = probing off: the conservative fp32 choice); environment "
        f"{payload.get('auto_settings')}",
        f"- rounds: {payload['rounds']}, interleaved; load average (1/5/15 min) before → after each run below; "
        f"runs under contention (1-min load > CPUs): {payload['contended_runs']} of {len(payload['runs'])}",
        "",
        "| round | configuration | images/s | loop s | command wall s | load before | load after |",
        "|---:|---|---:|---:|---:|---|---|",
    ]
    for run in payload["runs"]:
        lines.append(f"| {run['round']} | {run['backend_arg']} → {run['chosen']} | {run['images_per_s']:.2f} | "
                     f"{run['loop_seconds']:.1f} | {run['command_wall_s']:.1f} | "
                     f"{'/'.join(f'{v:.1f}' for v in run['load_before'])} | "
                     f"{'/'.join(f'{v:.1f}' for v in run['load_after'])} |")
    lines += ["", f"**median images/s: auto {payload['auto_median']:.2f}, torch {payload['torch_median']:.2f}; "
              f"ratio {payload['ratio']:.2f}× (target ≥ {TARGET}×: {'met' if payload['met'] else 'NOT met'})**", ""]
    table = sel.get("table") or []
    if table:
        lines += ["## The probe behind the choice", "",
                  "| configuration | status | images/s (probe) | gate measures | reason |", "|---|---|---:|---|---|"]
        for row in sorted(table, key=lambda r: -(r.get("images_per_s") or 0)):
            measures = ", ".join(f"{k} {v:.4g}" for k, v in (row.get("measures") or {}).items())
            ips = row.get("images_per_s")
            lines.append(f"| {row['configuration']} | {row['status']} | {'—' if not ips else f'{ips:.2f}'} | "
                         f"{measures} | {row.get('reason') or ''} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from datetime import datetime, timezone

    from segdeploy.core.environment import environment
    from segdeploy.engine.writers import atomic_write_text

    args = parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryDirectory(prefix="segdeploy-auto-vs-torch-") as tmp:
        folder, photos = photo_folder(Path(tmp) / "photos", args.images, (480, 640))
        out = Path(tmp) / "out"
        out.mkdir()
        print("untimed auto run (fills the probe cache)", flush=True)
        probe_run = predict(args.model, folder, out, None, env)
        runs = []
        for r in range(args.rounds):
            for backend in (None, "torch"):
                print(f"round {r + 1}/{args.rounds}: {backend or 'default (auto)'}", flush=True)
                run = predict(args.model, folder, out, backend, env)
                rt = run["runtime"] or {}
                run.update(round=r + 1, chosen=f"{rt.get('backend')} {rt.get('precision')}")
                runs.append(run)
    auto = [r["images_per_s"] for r in runs if r["backend_arg"] == "(default)"]
    torch = [r["images_per_s"] for r in runs if r["backend_arg"] == "torch"]
    ratio = statistics.median(auto) / statistics.median(torch)
    payload = {
        "kind": "auto_vs_torch", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": args.model, "images": args.images, "photos": photos, "rounds": args.rounds,
        "environment": environment(), "probe_run": probe_run, "runs": runs,
        "auto_median": statistics.median(auto), "torch_median": statistics.median(torch), "ratio": ratio,
        "target": TARGET, "met": ratio >= TARGET, "contended_runs": sum(r["contended"] for r in runs),
        "quick": args.quick,
        "auto_settings": {k: os.environ.get(k) for k in ("SEGDEPLOY_AUTO_PROBE", "SEGDEPLOY_AUTO_INT8")},
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    json_path = atomic_write_text(args.out_dir / f"{args.name}.json", json.dumps(payload, indent=2, default=str) + "\n")
    md_path = atomic_write_text(args.out_dir / f"{args.name}.md", markdown(payload))
    print(f"auto {payload['auto_median']:.2f} vs torch {payload['torch_median']:.2f} images/s: {ratio:.2f}x")
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
