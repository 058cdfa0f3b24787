#!/usr/bin/env python3
"""GPU suite: every registry model on one CUDA GPU, plain PyTorch peers against segdeploy.

Variants, timed in interleaved rounds by the same harness (``segdeploy.bench.harness``):

* ``eager32``    plain PyTorch eager fp32 (cudnn.benchmark on);
* ``eager16cl``  eager fp16, channels_last;
* ``compile16``  torch.compile fp16 channels_last (inductor, weights frozen, one static graph per
                 batch size; ``--compile-mode`` default "reduce-overhead" = with CUDA graphs,
                 "max-autotune" adds Triton autotuning and compiles much longer);
* ``ort32``      plain ONNX Runtime fp32 on the CUDA execution provider (when onnxruntime-gpu is there);
* ``sd:<backend>:<precision>[:<opt>+<opt>]`` segdeploy's PRODUCT runtimes, the very backend
                 ``segdeploy predict`` runs (``--segdeploy``; "auto" = what ``--backend auto`` picks
                 on CUDA); options: ``cl`` channels_last, ``compile`` (mode compile: dynamic=False,
                 batch buckets, compiled in warm-up), ``cudagraphs`` (bounded graph cache), ``half``
                 (cast="half"), ``tf32``; the fastest of them per batch is "segdeploy best". Each
                 record carries the runtime's describe(): mode, compile fallback (if compiling failed
                 the record says so), graphs cached, staging.

Two throughputs per batch size: host-to-host (``Runtime.run``: copies in and out included) and
device-only (inputs already on the GPU, CUDA events around the forward; needs ``run_device``),
the one comparable with PERFORMANCE.md §3 and the targets of §5. The JSON records device name,
driver, clocks and library versions (``segdeploy.core.environment``).

Without a CUDA device the script prints "skipped" and exits 0 without writing anything.
A full sweep of all models takes longer than 10 minutes; split it with ``--models``.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from _common import RESULTS, TorchEager, Variant, fmt_rate, run_variants, segdeploy_runtime, summarise, write_results

# model -> input size (PERFORMANCE.md §2/§3), batch sweep, images/s limit on one H100 (§2), target (§5)
MODELS = {  # published per-model facts, looked up by name (not the list of models run)
    "u2net": {"input_size": (320, 320), "batch_sizes": [1, 8, 32, 64], "limit": 6900, "target": 3500},
    "u2netp": {"input_size": (320, 320), "batch_sizes": [1, 16, 64, 128], "limit": 14600, "target": 7000},
    "unet_carvana": {"input_size": (512, 512), "batch_sizes": [1, 8, 16, 32], "limit": 2100, "target": 1400},
    "unetpp_dsb2018": {"input_size": (96, 96), "batch_sizes": [1, 16, 64, 256], "limit": 83500, "target": 40000},
    "unetpp_dsb2018_nearest": {"input_size": (96, 96), "batch_sizes": [1, 16, 64, 256], "limit": None,
                               "target": None},
    "unetpp_bigmb": {"input_size": (512, 512), "batch_sizes": [1, 4, 8, 16], "limit": 735, "target": 450},
    "unet_bigmb": {"input_size": (512, 512), "batch_sizes": [1, 4, 8, 16], "limit": None, "target": None},
    "wseg_voc": {"input_size": (1024, 1024), "batch_sizes": [1, 2, 4], "limit": 149, "target": 110},
}
# PERFORMANCE.md §3, best torch.compile fp16 figure on one H100 (the peer to beat)
PUBLISHED_COMPILE = {"u2net": 1934, "u2netp": 3059, "unet_carvana": 928, "unetpp_dsb2018": 14418,
                     "unetpp_bigmb": 270, "wseg_voc": 86}


DEFAULT_SD = "auto,torch:fp16:cl,torch:fp16:cl+compile,torch:fp16:cl+cudagraphs,torch:bf16:cl,onnxruntime:fp16"
_OPTS = {"cl": ("channels_last", True), "compile": ("mode", "compile"), "cudagraphs": ("mode", "cudagraphs"),
         "half": ("cast", "half"), "tf32": ("tf32", True)}


def sd_options(text: str) -> dict:
    """'cl+compile' -> {"channels_last": True, "mode": "compile"} (the product backend's options)."""
    options = {}
    for part in (p for p in text.split("+") if p):
        if part not in _OPTS:
            raise ValueError(f"unknown segdeploy option {part!r}; choose from {', '.join(_OPTS)}")
        key, value = _OPTS[part]
        options[key] = value
    return options


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="all", help="comma-separated subset of the registry (default all)")
    parser.add_argument("--batch-sizes", default=None, help="override every model's sweep, e.g. 1,8,32")
    parser.add_argument("--variants", default="eager32,eager16cl,compile16,ort32,segdeploy",
                        help="subset of eager32,eager16cl,compile16,ort32,segdeploy")
    parser.add_argument("--segdeploy", default=DEFAULT_SD,
                        help=f"segdeploy configurations: auto and/or backend:precision[:opt+opt] (default {DEFAULT_SD})")
    parser.add_argument("--compile-mode", default="reduce-overhead",
                        help="torch.compile mode of the compile16 peer (reduce-overhead = CUDA graphs; "
                        "max-autotune = also Triton autotuning, much slower to compile)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=10)
    loop = parser.add_mutually_exclusive_group()
    loop.add_argument("--iters", type=int, default=None, help="timed calls per batch size and round")
    loop.add_argument("--duration", type=float, default=None, help="seconds per batch size and round (default 3)")
    parser.add_argument("--quick", action="store_true", help="batch 1, 1 round, 1 warm-up, 2 timed calls")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run even without CUDA (with --device cpu: to test this script, not to measure)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--tag", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.iters, args.duration = 1, 1, 2, None
        args.batch_sizes = args.batch_sizes or "1"
        args.tag = args.tag or "quick"
    elif args.iters is None and args.duration is None:
        args.duration = 3.0
    return args


def variants_for(model: str, args) -> list[Variant]:
    wanted = {v.strip() for v in args.variants.split(",") if v.strip()}
    dev = args.device
    out = []
    if "eager32" in wanted:
        out.append(Variant("eager32", "PyTorch eager fp32", lambda: TorchEager(model, dev, "fp32")))
    if "eager16cl" in wanted:
        out.append(Variant("eager16cl", "PyTorch eager fp16 channels_last",
                           lambda: TorchEager(model, dev, "fp16", channels_last=True)))
    if "compile16" in wanted:
        out.append(Variant("compile16", f"torch.compile fp16 ({args.compile_mode})",
                           lambda: TorchEager(model, dev, "fp16", channels_last=True, compile_mode=args.compile_mode)))
    if "segdeploy" in wanted:
        for item in (s.strip() for s in args.segdeploy.split(",") if s.strip()):
            if item == "auto":
                out.append(Variant("sd:auto", "segdeploy auto", lambda: segdeploy_runtime(model, dev)))
            else:
                backend, _, rest = item.partition(":")
                precision, _, opts = rest.partition(":")
                options = sd_options(opts)
                out.append(Variant(f"sd:{item}", f"segdeploy {backend} {precision} {opts}".strip(),
                                   lambda b=backend, p=precision, o=options: segdeploy_runtime(
                                       model, dev, precision=p or "fp16", backend=b, **o)))
    if "ort32" in wanted:
        out.append(Variant("ort32", "ONNX Runtime fp32 CUDA (plain)", lambda: plain_ort_cuda(model, args)))
    return out


def plain_ort_cuda(model: str, args):
    """Plain ONNX Runtime on the CUDA execution provider, on a plain torch.onnx.export of the model."""
    import tempfile

    import onnxruntime as ort

    from _common import PlainOnnxRuntime, export_plain_onnx

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise RuntimeError("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)")
    cfg = MODELS.get(model) or {}
    folder = Path(tempfile.mkdtemp(prefix="gpu-suite-onnx-"))
    from segdeploy import get_spec

    size = tuple(cfg.get("input_size") or get_spec(model).input_size)
    return PlainOnnxRuntime(export_plain_onnx(model, size, folder), providers=["CUDAExecutionProvider"])


def markdown(payload: dict) -> str:
    env = payload["environment"]
    gpu = env.get("gpu") or {}
    lines = [
        f"# GPU suite — {payload['date']}",
        "",
        f"- device: {gpu.get('name')} ({gpu.get('memory_gib')} GiB, capability {gpu.get('capability')}), driver "
        f"{gpu.get('driver')}, CUDA {gpu.get('cuda')}, cuDNN {gpu.get('cudnn')}, SM clock {gpu.get('sm_clock')} "
        f"(max {gpu.get('sm_clock_max')}), power limit {gpu.get('power_limit')}",
        f"- host: {env.get('cpu')} ({env.get('cpu_count')} logical CPUs)",
        f"- packages: {', '.join(f'{k} {v}' for k, v in (env.get('packages') or {}).items() if v)}",
        f"- settings: {payload['settings']}",
        "- cells: device-only images/s (forward on inputs already on the GPU, CUDA events), median over rounds "
        "(min–max); host-to-host figures are in the JSON. Random weights, random input.",
        "",
    ]
    keys = payload["variant_labels"]
    head = ["model", "input", "batch"] + [keys[k] for k in keys] + ["segdeploy best", "limit (§2)", "target (§5)",
                                                                     "§3 compile best"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * 3 + "---:|" * (len(head) - 3))
    for model, cfg in payload["models"].items():
        rows = [r for r in payload["summary"] if r["model"] == model and "batch_size" in r]
        for bs in sorted({r["batch_size"] for r in rows}):
            at = {r["variant"]: r for r in rows if r["batch_size"] == bs}

            def rate(row):
                return (row or {}).get("device_only_images_per_s_median", (row or {}).get("images_per_s_median"))

            sd = [rate(at[k]) for k in at if k.startswith("sd:") and rate(at[k])]
            best = f"{max(sd):,.0f}" if sd else "—"
            share = f" ({max(sd) / cfg['limit']:.0%})" if sd and cfg.get("limit") else ""
            cells = [model, "x".join(map(str, cfg["input_size"])), str(bs)]
            cells += [fmt_rate(at.get(k), "device_only_images_per_s") if at.get(k, {}).get(
                "device_only_images_per_s_median") else fmt_rate(at.get(k)) for k in keys]
            cells += [best + share, str(cfg.get("limit") or "—"), str(cfg.get("target") or "—"),
                      str(PUBLISHED_COMPILE.get(model, "—"))]
            lines.append("| " + " | ".join(cells) + " |")
    errors = [r for r in payload["summary"] if r.get("error")]
    if errors:
        lines += ["", "## Variants that did not run (or stopped)", ""]
        lines += [f"- {r['model']} / {r['label']}: {r['error']}" for r in errors]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda and not args.allow_cpu:
        print("skipped: no CUDA device visible to torch; nothing measured, nothing written")
        return 0
    from segdeploy import get_spec, list_models
    from segdeploy.core.environment import environment

    # every registry model (plugins included); MODELS only adds published limits and targets
    models = list_models() if args.models == "all" else [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in list_models()]
    if unknown:
        print(f"unknown model(s) {unknown}", file=sys.stderr)
        return 2
    summary, reports, labels = [], [], {}
    for model in models:
        cfg = MODELS.get(model) or {"input_size": tuple(get_spec(model).input_size), "batch_sizes": [1, 8],
                                    "limit": None, "target": None}
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else cfg["batch_sizes"]
        variants = variants_for(model, args)
        labels.update({v.key: v.label for v in variants})
        run_variants(model, variants, batch_sizes=batch_sizes, input_size=cfg["input_size"], repeats=args.repeats,
                     warmup=args.warmup, iters=args.iters, duration=args.duration, device=args.device,
                     limit_images_per_s=cfg.get("limit"), log=lambda m: print(m, flush=True))
        summary += summarise(model, variants)
        for v in variants:
            reports += [dict(variant=v.key, round=i, **r.to_dict()) for i, r in enumerate(v.reports)]
            v.runtime = None
        if has_cuda:
            torch.cuda.empty_cache()
    payload = {
        "kind": "gpu_suite",
        "date": date.today().isoformat(),
        "environment": environment(),
        "settings": {"repeats": args.repeats, "warmup": args.warmup, "iters": args.iters, "duration_s": args.duration,
                     "compile_mode": args.compile_mode, "quick": args.quick, "weights": "random"},
        "models": {m: MODELS.get(m) or {"input_size": tuple(get_spec(m).input_size)} for m in models},
        "variant_labels": labels,
        "published_section3_compile_fp16": PUBLISHED_COMPILE,
        "summary": summary,
        "reports": reports,
    }
    json_path, md_path = write_results("gpu", payload, markdown(payload), args.out_dir, args.tag)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
