#!/usr/bin/env python3
"""End to end (JPEG files in, PNG masks out) against pure inference, same runtime, same batch size.

Issue 13's CPU line: end-to-end images/s ≥ 90 % of pure-inference images/s at the same
backend/precision/batch for u2netp (320², from 640x480 JPEGs) and unet_carvana (native size at
scale 0.5, from 1918x1280 JPEGs), with the stage breakdown.

Both figures come from one runtime object in one process, measured by ``segdeploy.bench``:
pure = ``Runtime.run`` on seeded random batches of the network input size (for unet_carvana the
size 1918x1280 JPEGs give: 640x959); end to end = the product's streaming pipeline (read + JPEG
decode, preprocess, batch, run, decode to the original size, PNG encode + atomic write; thread
pools for reading and writing) over the folder. Per round, pure then end to end; ``--rounds``
rounds; medians reported. The stage seconds (read / preprocess / infer / decode / write) are
summed over threads, so they overlap; their shares show where CPU time goes.

Load average is recorded before and after each model; a 1-minute load above the CPU count means
other processes took CPU from both measurements ("under contention").
Writes ``benchmarks/results/e2e_vs_pure_cpu.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from _common import RESULTS, load_average, photo_folder

MODELS = {
    "u2netp": {"jpeg_hw": (480, 640), "images": 32, "batch_sizes": [1]},
    "unet_carvana": {"jpeg_hw": (1280, 1918), "images": 8, "batch_sizes": [1]},
}
TARGET = 0.90


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--backend", default="auto", help="backend of both measurements (default auto)")
    parser.add_argument("--precision", default=None, help="precision (default: the auto choice, or fp32)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of pure timing per round")
    parser.add_argument("--images", type=int, default=None, help="override the JPEG count of every model")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--name", default="e2e_vs_pure_cpu")
    parser.add_argument("--quick", action="store_true", help="u2netp, 2 images, 1 round, 1 s: proves it works")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.images, args.rounds, args.duration = "u2netp", 2, 1, 1.0
    return args


def measure(model: str, cfg: dict, args, folder: Path) -> dict:
    from segdeploy.backends import open_runtime
    from segdeploy.bench.harness import benchmark
    from segdeploy.bench.options import BenchOptions

    runtime = open_runtime(model, args.backend, precision=args.precision, weights="random")
    before = load_average()
    rounds = []
    for r in range(args.rounds):
        print(f"[{model}] round {r + 1}/{args.rounds}", flush=True)
        options = BenchOptions(batch_sizes=cfg["batch_sizes"], warmup=2, duration=args.duration, images=folder,
                               count_flops=False, label=f"round {r + 1}")
        report = benchmark(model, options, runtime=runtime)
        rounds.append(report)
    after = load_average()
    rows = []
    for i, bs in enumerate(cfg["batch_sizes"]):
        pure = [rep.results[i].images_per_s for rep in rounds]
        e2e = [rep.results[i].e2e.images_per_s for rep in rounds]
        stages = [rep.results[i].e2e.stage_seconds for rep in rounds]
        wall = [rep.results[i].e2e.wall_s for rep in rounds]
        rows.append({"batch_size": bs, "pure_images_per_s": pure, "e2e_images_per_s": e2e,
                     "pure_median": statistics.median(pure), "e2e_median": statistics.median(e2e),
                     "ratio": statistics.median(e2e) / statistics.median(pure),
                     "stage_seconds": stages, "e2e_wall_s": wall, "input_size": list(rounds[0].input_size)})
    return {"model": model, "runtime": rounds[0].runtime, "selection": runtime.selection, "jpeg_hw": cfg["jpeg_hw"],
            "images": cfg["images"], "rows": rows, "load_before": before, "load_after": after,
            "contended": max(before[0], after[0]) > (os.cpu_count() or 1)}


def markdown(payload: dict) -> str:
    env = payload["environment"]
    lines = [f"# End to end vs pure inference on this CPU — {payload['date']}", "",
             f"- machine: {env.get('cpu')} ({env.get('cpu_count')} logical CPUs); packages: "
             + ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items() if v),
             f"- {payload['rounds']} rounds per model (pure then end to end, same runtime object); medians; "
             f"random weights; target e2e/pure ≥ {TARGET:.0%}",
             "- stage seconds are summed over threads (they overlap with each other and with inference)", ""]
    head = ("| model | JPEG | net input | backend precision | batch | pure img/s | e2e img/s | e2e/pure | read s | "
            "preprocess s | infer s | decode s | write s | load before → after |")
    lines += [head, "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for m in payload["models"]:
        rt = m["runtime"]
        for row in m["rows"]:
            st = row["stage_seconds"][-1]
            lines.append(
                f"| {m['model']} | {m['images']}× {m['jpeg_hw'][1]}x{m['jpeg_hw'][0]} | "
                f"{row['input_size'][0]}x{row['input_size'][1]} | {rt.get('backend')} {rt.get('precision')} | "
                f"{row['batch_size']} | {row['pure_median']:.2f} | {row['e2e_median']:.2f} | "
                f"**{row['ratio']:.0%}** | {st.get('read', 0):.2f} | {st.get('preprocess', 0):.2f} | "
                f"{st.get('infer', 0):.2f} | {st.get('decode', 0):.2f} | {st.get('write', 0):.2f} | "
                f"{'/'.join(f'{v:.1f}' for v in m['load_before'])} → {'/'.join(f'{v:.1f}' for v in m['load_after'])}"
                f"{' (contended)' if m['contended'] else ''} |")
    lines += ["", "Per-round values are in the JSON (pure_images_per_s, e2e_images_per_s, stage_seconds)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from datetime import datetime, timezone

    from segdeploy.core.environment import environment
    from segdeploy.engine.writers import atomic_write_text

    args = parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    results = []
    with tempfile.TemporaryDirectory(prefix="segdeploy-e2e-") as tmp:
        for model in models:
            cfg = dict(MODELS[model])
            if args.images:
                cfg["images"] = args.images
            folder, photos = photo_folder(Path(tmp) / model, cfg["images"], cfg["jpeg_hw"])
            result = measure(model, cfg, args, folder)
            result["photos"] = photos
            results.append(result)
    payload = {"kind": "e2e_vs_pure", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "rounds": args.rounds, "duration_s": args.duration, "backend_arg": args.backend,
               "environment": environment(), "models": results, "target": TARGET,
               "met": all(row["ratio"] >= TARGET for m in results for row in m["rows"]), "quick": args.quick}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    json_path = atomic_write_text(args.out_dir / f"{args.name}.json", json.dumps(payload, indent=2, default=str) + "\n")
    md_path = atomic_write_text(args.out_dir / f"{args.name}.md", markdown(payload))
    for m in results:
        for row in m["rows"]:
            print(f"{m['model']} batch {row['batch_size']}: pure {row['pure_median']:.2f}, e2e {row['e2e_median']:.2f} "
                  f"images/s = {row['ratio']:.0%}")
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
