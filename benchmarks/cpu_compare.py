#!/usr/bin/env python3
"""CPU comparison: segdeploy's default and int8 paths against what a user gets without it.

For u2netp (320²), unetpp_dsb2018 (96²) and unet_carvana (512²), in one process on this machine:

* ``ort``        plain ONNX Runtime fp32 (torch.onnx.export opset 17, ORT_ENABLE_ALL, CPU provider);
* ``openvino``   OpenVINO with its CPU defaults (it picks its own inference precision, bf16 on
                 CPUs with AMX/AVX-512-bf16) and the LATENCY hint, compiled per batch shape;
* ``segdeploy``  segdeploy's default CPU path (what ``--backend auto`` selects);
* ``int8``       segdeploy's int8 path on the CPU;
* ``torch``      (with ``--with-torch``) plain PyTorch eager fp32.

Variants are timed in interleaved rounds (``--repeats``), median and min–max images/s over rounds
are reported; PERFORMANCE.md §4 numbers are shown beside them. Random weights (speed does not
depend on weight values). Writes ``benchmarks/results/cpu_<date>.json`` and ``.md``.

Run it on an otherwise idle machine: ``python benchmarks/cpu_compare.py``. Prove it works in a
few seconds with ``--quick --out-dir /tmp/x``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import (
    RESULTS,
    OpenVinoDefault,
    PlainOnnxRuntime,
    TorchEager,
    Variant,
    export_plain_onnx,
    fmt_rate,
    run_variants,
    scratch_dir,
    segdeploy_runtime,
    summarise,
    write_results,
)

# model -> input size and batch sizes of PERFORMANCE.md §4
MODELS = {
    "u2netp": {"input_size": (320, 320), "batch_sizes": [1, 8]},
    "unetpp_dsb2018": {"input_size": (96, 96), "batch_sizes": [1, 16]},
    "unet_carvana": {"input_size": (512, 512), "batch_sizes": [1]},
}

# PERFORMANCE.md §4, images/s on a 2-core AMD EPYC: (model, batch) -> {column: value}
PUBLISHED = {
    ("u2netp", 1): {"torch": 2.60, "ort": 1.99, "openvino": 3.24},
    ("u2netp", 8): {"torch": 1.86, "ort": 4.56, "openvino": 8.18},
    ("unet_carvana", 1): {"torch": 0.38, "ort": 0.56, "openvino": 1.18},
    ("unetpp_dsb2018", 1): {"torch": 14.6, "ort": 20.1, "openvino": 39.1},
    ("unetpp_dsb2018", 16): {"torch": 14.6, "ort": 22.2, "openvino": 43.4},
}
PEERS = ("torch", "ort", "openvino")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    parser.add_argument("--batch-sizes", default=None, help="override every model's batch sizes, e.g. 1,4")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per batch size and round (default 3)")
    loop = parser.add_mutually_exclusive_group()
    loop.add_argument("--iters", type=int, default=None, help="timed calls per batch size and round")
    loop.add_argument("--duration", type=float, default=None,
                      help="seconds of timed calls per batch size and round (default 15)")
    parser.add_argument("--with-torch", action="store_true", help="also time plain PyTorch eager fp32")
    parser.add_argument("--skip", default="", help="comma-separated variants to leave out (ort,openvino,segdeploy,int8)")
    parser.add_argument("--quick", action="store_true",
                        help="prove the script works: batch 1, 1 round, no warm-up, 1 timed call (numbers are noise)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help=f"where results go (default {RESULTS})")
    parser.add_argument("--tag", default=None, help="suffix of the result file names")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.iters, args.duration = 1, 0, 1, None
        args.batch_sizes = args.batch_sizes or "1"
        args.tag = args.tag or "quick"
    elif args.iters is None and args.duration is None:
        args.duration = 15.0
    return args


def calibration_images(n: int = 16) -> list:
    """Photo-like RGB images (the demo's generator) to calibrate int8 on; speed does not depend on them."""
    from segdeploy.recipes.demo import render_sample

    return [render_sample(i, seed=1).image for i in range(n)]


def variants_for(model: str, onnx_path: Path, args) -> list[Variant]:
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    out = []
    if args.with_torch:
        out.append(Variant("torch", "PyTorch eager fp32", lambda: TorchEager(model, "cpu", "fp32")))
    out.append(Variant("ort", "ONNX Runtime fp32 (plain)", lambda: PlainOnnxRuntime(onnx_path)))
    out.append(Variant("openvino", "OpenVINO CPU defaults (latency)", lambda: OpenVinoDefault(onnx_path)))
    out.append(Variant("segdeploy", "segdeploy default CPU", lambda: segdeploy_runtime(model, "cpu")))
    out.append(Variant("int8", "segdeploy int8 (16 generated calibration photos)",
                       lambda: segdeploy_runtime(model, "cpu", precision="int8", calib=calibration_images())))
    return [v for v in out if v.key not in skip]


def markdown(payload: dict) -> str:
    env = payload["environment"]
    lines = [
        f"# CPU comparison — {payload['date']}",
        "",
        f"- machine: {env.get('cpu')} ({env.get('cpu_count')} logical CPUs), {env.get('platform')}",
        f"- packages: {', '.join(f'{k} {v}' for k, v in (env.get('packages') or {}).items() if v)}",
        f"- settings: {payload['settings']}",
        "- cells: median images/s over the rounds (min–max in brackets = run-to-run spread); "
        "a difference inside the spread is noise. Pure inference on random input, random weights.",
        "- 'vs best peer' = segdeploy ÷ the fastest non-segdeploy variant of this run "
        "(target ≥ 1.0 for the default path, ≥ 1.5 for int8, PERFORMANCE.md §5).",
        "",
    ]
    keys = payload["variant_labels"]
    head = ["model", "input", "batch"] + [keys[k] for k in keys] + ["§4 best (published)", "default vs best peer",
                                                                     "int8 vs best peer"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * 3 + "---:|" * (len(head) - 3))
    for model, cfg in payload["models"].items():
        rows = [r for r in payload["summary"] if r["model"] == model and "batch_size" in r]
        for bs in sorted({r["batch_size"] for r in rows}):
            at = {r["variant"]: r for r in rows if r["batch_size"] == bs}
            peer_best = max((at[k]["images_per_s_median"] for k in PEERS if k in at), default=None)
            published = PUBLISHED.get((model, bs))
            pub = f"{max(published.values()):.2f}" if published else "—"

            def ratio(key):
                if key not in at or not peer_best:
                    return "—"
                return f"{at[key]['images_per_s_median'] / peer_best:.2f}×"

            cells = [model, "x".join(map(str, cfg["input_size"])), str(bs)]
            cells += [fmt_rate(at.get(k)) for k in keys] + [pub, ratio("segdeploy"), ratio("int8")]
            lines.append("| " + " | ".join(cells) + " |")
    errors = [r for r in payload["summary"] if r.get("error")]
    if errors:
        lines += ["", "## Variants that did not run (or stopped)", ""]
        lines += [f"- {r['model']} / {r['label']}: {r['error']}" for r in errors]
    lines += ["", "## Runtimes as they described themselves", ""]
    for item in payload["runtimes"]:
        lines.append(f"- {item['model']} / {item['label']}: {item['describe']}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from segdeploy.core.environment import environment

    args = parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        print(f"unknown model(s) {unknown}; choose from {list(MODELS)}", file=sys.stderr)
        return 2
    reports, summary, runtimes, labels = [], [], [], {}
    with scratch_dir() as tmp:
        for model in models:
            cfg = MODELS[model]
            batch_sizes = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else cfg["batch_sizes"]
            print(f"[{model}] exporting plain ONNX at {cfg['input_size']}", flush=True)
            onnx_path = export_plain_onnx(model, cfg["input_size"], Path(tmp))
            variants = variants_for(model, onnx_path, args)
            labels.update({v.key: v.label for v in variants})
            run_variants(model, variants, batch_sizes=batch_sizes, input_size=cfg["input_size"],
                         repeats=args.repeats, warmup=args.warmup, iters=args.iters, duration=args.duration,
                         log=lambda m: print(m, flush=True))
            summary += summarise(model, variants)
            for v in variants:
                reports += [dict(variant=v.key, round=i, **r.to_dict()) for i, r in enumerate(v.reports)]
                if v.reports:
                    runtimes.append({"model": model, "label": v.label, "describe": v.reports[0].runtime})
                v.runtime = None  # free the sessions before the next model
    from datetime import date

    payload = {
        "kind": "cpu_compare",
        "date": date.today().isoformat(),
        "environment": environment(),
        "settings": {"repeats": args.repeats, "warmup": args.warmup, "iters": args.iters,
                     "duration_s": args.duration, "quick": args.quick, "weights": "random"},
        "models": {m: MODELS[m] for m in models},
        "variant_labels": labels,
        "published_section4": {f"{m}@{b}": v for (m, b), v in PUBLISHED.items()},
        "summary": summary,
        "runtimes": runtimes,
        "reports": reports,
    }
    json_path, md_path = write_results("cpu", payload, markdown(payload), args.out_dir, args.tag)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
