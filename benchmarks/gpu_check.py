#!/usr/bin/env python3
"""One GPU check that fits a short lease: the GPU tests, the precisions' errors, segdeploy's
default ``predict --device cuda`` end to end, plain PyTorch peers, and serving.

    python benchmarks/gpu_check.py                          # on a CUDA machine, < 8 minutes on one H200
    python benchmarks/gpu_check.py --dry-run --out /tmp/x   # the same code on the CPU with tiny sizes (CI)

Writes ``gpu_check.json`` and ``gpu_check.md`` into ``--out`` (default benchmarks/results) after
every section, so a run stopped by its lease keeps what it measured. Keys: ``device``, ``tests``
({passed, failed, skipped}), ``predict`` (per model: ``choice`` {backend, precision, mode},
``e2e_images_per_s``, ``pure_images_per_s``, ``e2e_over_pure``), ``peers`` (per model: eager fp16,
CUDA graphs fp16 and torch.compile fp16 pure images/s at the best batch, ``segdeploy_over_compile``),
``serve`` (requests/s at concurrency 32, batching and one-per-pass, their ratio), ``compile_seconds``,
``errors`` (the measured element-wise errors that docs/verification.md's GPU limits come from).

Each section runs in a subprocess of its own with its own timeout (``--budget-SECTION``): a compile
that hangs or a CUDA error costs that section only. For long sweeps use gpu_suite.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
ROOT = HERE.parent
SECTIONS = ("tests", "predict", "peers", "serve", "errors")
# Seconds per section on one H200 (a fresh machine: nothing compiled yet). Measured 2026-12-04: the
# GPU tests took over 85 s, u2netp's first predict (probe + compile) over 47 s, peers over 85 s.
BUDGETS = {"tests": 150, "predict": 180, "peers": 120, "serve": 75, "errors": 45}
MODELS = ("u2netp", "unet_carvana", "unetpp_dsb2018")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: proves the script runs")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder of gpu_check.json / .md")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    parser.add_argument("--models", default=",".join(MODELS), help="models of predict and peers")
    parser.add_argument("--predict-args", default="", help="extra predict arguments (one string)")
    parser.add_argument("--concurrency", type=int, default=32, help="serve: requests in flight (default 32)")
    parser.add_argument("--requests", type=int, default=512, help="serve: requests per server (default 512)")
    for name, seconds in BUDGETS.items():
        parser.add_argument(f"--budget-{name}", type=float, default=seconds, help=f"seconds for {name} ({seconds})")
    parser.add_argument("--section", help=argparse.SUPPRESS)  # internal: run one section, print its JSON
    return parser.parse_args(argv)


def run_section(args) -> dict:
    import gpu_sections as s

    models = [m for m in args.models.split(",") if m]
    if args.dry_run and args.models == ",".join(MODELS):
        models = ["unetpp_dsb2018"]  # the smallest network: the dry run proves the code, not the speed
    budget = getattr(args, f"budget_{args.section}")
    if args.section == "tests":
        return s.section_tests(args.dry_run, budget - 10)
    if args.section == "errors":
        return s.section_errors(args.dry_run, budget)
    if args.section == "predict":
        return s.section_predict(args.dry_run, budget - 10, models, args.predict_args.split())
    if args.section == "peers":
        return s.section_peers(args.dry_run, budget, models)
    if args.section == "serve":
        return s.section_serve(args.dry_run, budget, args.concurrency, args.requests)
    raise SystemExit(f"unknown section {args.section!r}")


def device_record(dry: bool) -> dict:
    from segdeploy.core.environment import environment

    record = {"dry_run": dry, "environment": environment()}
    try:
        import torch

        if torch.cuda.is_available():
            record.update(name=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                          memory_gb=round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1))
        else:
            record.update(name="cpu (no CUDA device)")
        record["torch"] = torch.__version__
    except ImportError:
        record["name"] = "no torch"
    record["cpu_count"] = os.cpu_count()
    record["loadavg"] = [round(v, 2) for v in os.getloadavg()]
    return record


def derived(payload: dict) -> None:
    """The acceptance keys computed from the sections' raw results."""
    predict, peers = payload.get("predict") or {}, payload.get("peers") or {}
    for model, row in predict.items():
        if not isinstance(row, dict) or "summary" not in row:
            continue
        runtime = (row["summary"] or {}).get("runtime") or {}
        row["choice"] = {"backend": runtime.get("backend"), "precision": runtime.get("precision"),
                         "mode": runtime.get("mode"), "channels_last": runtime.get("channels_last")}
        pure = row.get("pure_images_per_s")
        pure = pure if isinstance(pure, (int, float)) else None
        e2e = row.get("e2e_images_per_s")
        if pure and e2e:
            row["e2e_over_pure"] = round(e2e / pure, 3)
        peer = peers.get(model) if isinstance(peers.get(model), dict) else None
        if peer and pure and (peer.get("best") or {}).get("compile_fp16"):
            peer["segdeploy_over_compile"] = round(pure / peer["best"]["compile_fp16"], 3)
    compile_seconds = {m: p.get("compile_seconds") for m, p in peers.items() if isinstance(p, dict)}
    payload["compile_seconds"] = compile_seconds


def markdown(payload: dict) -> str:
    lines = [f"# GPU check — {payload['device'].get('name')}", "",
             f"Run {payload['started']}, {payload['seconds']} s; torch {payload['device'].get('torch')}; "
             f"dry run: {payload['device'].get('dry_run')}; load {payload['device'].get('loadavg')}.", ""]
    tests = payload.get("tests") or {}
    if tests:
        lines += [f"**Tests** (`pytest -m gpu`): {tests.get('passed')} passed, {tests.get('failed')} failed, "
                  f"{tests.get('skipped')} skipped in {tests.get('seconds')} s", ""]
        lines += [f"- FAILED {f}" for f in tests.get("failures", [])] + [""]
    lines += ["| model | choice | e2e img/s | pure img/s | e2e/pure | eager fp16 | graphs fp16 | compile fp16 | "
              "segdeploy/compile |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for model in MODELS:
        row = (payload.get("predict") or {}).get(model) or {}
        peer = (payload.get("peers") or {}).get(model) or {}
        best = peer.get("best") or {}
        choice = row.get("choice") or {}
        label = "/".join(str(choice.get(k)) for k in ("backend", "precision", "mode")) if choice else "—"

        def num(value):
            return f"{value:,.0f}" if isinstance(value, (int, float)) else "—"
        lines.append(f"| {model} | {label} | {num(row.get('e2e_images_per_s'))} | {num(row.get('pure_images_per_s'))} "
                     f"| {row.get('e2e_over_pure', '—')} | {num(best.get('eager_fp16'))} | "
                     f"{num(best.get('cudagraphs_fp16'))} | {num(best.get('compile_fp16'))} | "
                     f"{peer.get('segdeploy_over_compile', '—')} |")
    serve = payload.get("serve") or {}
    if serve.get("batching"):
        lines += ["", f"**Serve** (u2netp, concurrency {serve.get('concurrency')}): batching "
                  f"{serve['batching'].get('throughput_rps')} req/s, one per pass "
                  f"{serve['one_per_pass'].get('throughput_rps')} req/s, ratio {serve.get('batching_over_one_per_pass')}"]
    errors = [f"- {name}: {value['error']}" for name, value in payload.items()
              if isinstance(value, dict) and value.get("error")]
    if errors:
        lines += ["", "**Sections that did not finish**", *errors]
    return "\n".join(lines) + "\n"


def write(payload: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    derived(payload)
    for name, text in (("gpu_check.json", json.dumps(payload, indent=2, default=str) + "\n"),
                       ("gpu_check.md", markdown(payload))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.section:
        print("GPU-CHECK-RESULT " + json.dumps(run_section(args), default=str), flush=True)
        return 0
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("skipped: no CUDA device (use --dry-run to run the same code on the CPU)")
        return 0
    started = time.perf_counter()
    payload = {"device": device_record(args.dry_run),
               "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seconds": 0}
    base = [a for a in (argv if argv is not None else sys.argv[1:])]
    for section in [s for s in args.sections.split(",") if s]:
        budget = getattr(args, f"budget_{section}")
        t0 = time.perf_counter()
        print(f"[gpu_check] {section} (budget {budget:.0f} s)", flush=True)
        try:
            proc = subprocess.run([sys.executable, __file__, *base, "--section", section], cwd=ROOT,
                                  capture_output=True, text=True, timeout=budget)
            found = [line for line in proc.stdout.splitlines() if line.startswith("GPU-CHECK-RESULT ")]
            if found:
                payload[section] = json.loads(found[-1][len("GPU-CHECK-RESULT "):])
            else:
                payload[section] = {"error": f"exit {proc.returncode}: {(proc.stdout + proc.stderr)[-2000:]}"}
        except subprocess.TimeoutExpired as exc:
            tail = ((exc.stdout or b"") + (exc.stderr or b""))[-2000:]
            payload[section] = {"error": f"timed out after {budget:.0f} s: {tail.decode(errors='replace') if isinstance(tail, bytes) else tail}"}
        print(f"[gpu_check] {section} done in {time.perf_counter() - t0:.0f} s", flush=True)
        payload["seconds"] = round(time.perf_counter() - started, 1)
        write(payload, args.out)
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
