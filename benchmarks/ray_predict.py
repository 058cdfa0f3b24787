#!/usr/bin/env python3
"""Local engine vs ``--engine ray`` with 1 and 2 workers: images/s and Ray's start-up overhead.

u2netp (320² network input), random weights (speed does not depend on weight values), one backend
in every variant (``--backend``, default ONNX Runtime fp32; so only the engine differs), 300 JPEGs of 320×240
generated deterministically (seed 0). Each variant writes into a fresh output folder:

* ``local``      ``segdeploy predict`` as is (threads for reading/writing, one runtime);
* ``ray-1``      ``--engine ray --ray-workers 1 --cpus-per-worker 2`` (one actor, two threads);
* ``ray-2``      ``--engine ray --ray-workers 2 --cpus-per-worker 1`` (two actors, one thread each).

Every Ray variant starts its own local Ray instance (no ``--address``), as a first run on a laptop
would: ``startup_s`` is ray.init until the cluster answers; ``job_s`` and ``images_per_s`` cover
the Ray Data job only (actor start-up, which opens the runtime, is inside it); ``end_to_end_s``
adds both. Load average is recorded before and after each variant; a run is marked
``contended`` when the 1-minute load average exceeded the core count at either point — then the
numbers say more about the neighbours than about segdeploy.

Writes ``benchmarks/results/ray_u2netp_cpu.json`` and ``.md``. Quick check:
``python benchmarks/ray_predict.py --images 12 --out-dir /tmp/x``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "u2netp"


def make_jpegs(folder: Path, n: int, seed: int = 0) -> Path:
    """``n`` 320×240 JPEGs: a bright ellipse on smooth noise, deterministic for a seed."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:240, 0:320]
    for i in range(n):
        base = rng.integers(0, 120, (24, 32, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(base).resize((320, 240), Image.Resampling.BILINEAR)).copy()
        cy, cx, ry, rx = rng.uniform(80, 160), rng.uniform(100, 220), rng.uniform(30, 80), rng.uniform(40, 110)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        image[inside] = np.clip(image[inside].astype(int) + 110, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{i:04d}.jpg", quality=90)
    return folder


def compare_outputs(work: Path, chosen: list[str], runs: list[dict]) -> bool:
    """Compare every variant's masks with the first variant's; record files and pixels that differ.

    PyTorch CPU kernels reduce in a thread-count-dependent order, so with ``--backend torch``
    runtimes with different thread counts (local: 2, ray-2: 1 per actor) can differ in the last
    float bits, which moves a few 8-bit saliency values by 1 at truncation boundaries; the engines
    themselves add no difference.
    """
    from PIL import Image

    ref_dir = work / f"out-{chosen[0]}"
    names = sorted(p.name for p in ref_dir.iterdir())
    all_same = True
    for run, name in zip(runs, chosen):
        folder = work / f"out-{name}"
        differing, pixels, worst = 0, 0, 0
        if sorted(p.name for p in folder.iterdir()) != names:
            run["compared_to_" + chosen[0]] = {"same_file_names": False}
            all_same = False
            continue
        for f in names:
            if (folder / f).read_bytes() == (ref_dir / f).read_bytes():
                continue
            differing += 1
            a = np.asarray(Image.open(folder / f), dtype=np.int16)
            b = np.asarray(Image.open(ref_dir / f), dtype=np.int16)
            pixels += int((a != b).sum())
            worst = max(worst, int(np.abs(a - b).max()))
        run["compared_to_" + chosen[0]] = {"same_file_names": True, "files_differing": differing,
                                           "pixels_differing": pixels, "max_abs_difference": worst}
        all_same = all_same and differing == 0
    return all_same


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def run_variant(name: str, images: Path, out: Path, workers: int | None, cpus: float, backend: str) -> dict:
    from segdeploy.jobs.options import PredictOptions
    from segdeploy.jobs.predict import predict_files

    before = load()
    t0 = time.perf_counter()
    if workers is None:
        options = PredictOptions.of(weights="random", backend=backend)
        summary = predict_files(MODEL, [str(images)], out, options, progress=False)
        startup = 0.0
        job = summary.seconds
    else:
        from segdeploy.scale.cluster import RayOptions
        from segdeploy.scale.predict import predict_files_ray

        summary = predict_files_ray(MODEL, [str(images)], out, PredictOptions.of(weights="random", backend=backend),
                                    ray=RayOptions(workers=workers, cpus_per_worker=cpus), progress=False)
        startup = summary.stages["ray"]["startup_s"]
        job = summary.seconds
    total = time.perf_counter() - t0
    after = load()
    cores = os.cpu_count() or 1
    return {
        "variant": name, "workers": workers, "cpus_per_worker": cpus,
        "images": summary.found, "written": summary.written, "failed": len(summary.failed),
        "job_s": round(job, 2), "images_per_s": round(summary.written / job, 3) if job else None,
        "startup_s": round(startup, 2), "end_to_end_s": round(total, 2),
        "end_to_end_images_per_s": round(summary.written / total, 3),
        "load_before": before, "load_after": after,
        "contended": max(before[0], after[0]) > cores,
        "runtime_threads": (summary.runtime or {}).get("threads") or (summary.runtime or {}).get("torch_threads") or (summary.runtime or {}).get("intra_op_threads"),
    }


def markdown(record: dict) -> str:
    lines = [
        f"# Local engine vs --engine ray — {record['model']} on {record['machine']['cores']} CPU cores",
        "",
        f"{record['images']} JPEGs 320×240, random weights, {record['backend']} in every variant; measured "
        f"{record['date']}. images/s counts the job only; Ray start-up is the separate column.",
        "",
        "| variant | workers × CPUs | job s | images/s | Ray start-up s | end to end s | load before → after | contended |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in record["runs"]:
        shape = "threads" if r["workers"] is None else f"{r['workers']} × {r['cpus_per_worker']:g}"
        lines.append(f"| {r['variant']} | {shape} | {r['job_s']:.1f} | {r['images_per_s']:.2f} | {r['startup_s']:.1f} "
                     f"| {r['end_to_end_s']:.1f} | {r['load_before'][0]} → {r['load_after'][0]} | "
                     f"{'yes' if r['contended'] else 'no'} |")
    if not record["complete"]:
        lines += ["", "**PARTIAL**: the run was cut short; the variants above are the ones that finished."]
    if record.get("why"):
        lines += ["", record["why"]]
    if record["outputs_identical_across_variants"] is not None:
        lines += ["", f"Outputs identical across variants (byte for byte): {record['outputs_identical_across_variants']}."]
        for r in record["runs"]:
            for key, value in r.items():
                if key.startswith("compared_to_") and r["variant"] != key[len("compared_to_"):]:
                    lines.append(f"- {r['variant']} vs {key[len('compared_to_'):]} (runtime threads "
                                 f"{r['runtime_threads']}): {value}")
    lines += ["", record["note"], ""]
    return "\n".join(lines)


def _comparison(runs: list[dict]) -> str:
    """The measured ratios in words (nothing claimed that the rows do not show)."""
    local = next((r for r in runs if r["workers"] is None), None)
    parts = []
    for r in runs:
        if r["workers"] is None or not local or not local["images_per_s"] or not r["images_per_s"]:
            continue
        parts.append(f"{r['variant']}: {r['images_per_s'] / local['images_per_s']:.2f}x the local engine's images/s "
                     f"over the job, {r['end_to_end_images_per_s'] / local['end_to_end_images_per_s']:.2f}x end to end "
                     f"(Ray start-up {r['startup_s']:.1f} s, actor start inside the job)")
    return "; ".join(parts) + "." if parts else ""


def write(args, runs: list[dict], *, same: bool | None, complete: bool) -> None:
    import ray

    contended = any(r["contended"] for r in runs)
    record = {
        "kind": "benchmark", "name": "ray_predict", "model": MODEL, "images": args.images,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "complete": complete, "why": args.why,
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "ray": ray.__version__},
        "outputs_identical_across_variants": same,
        "runs": runs,
        "backend": args.backend,
        "note": ("Load average above the core count at some point: that counts this benchmark's own threads "
                 "(a saturated 2-core run keeps 2+ runnable) and the tail of whatever ran just before; check that "
                 "nothing else ran before trusting absolute numbers. " if contended else "")
                + _comparison(runs),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "ray_u2netp_cpu.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.out_dir / "ray_u2netp_cpu.md").write_text(markdown(record))
    if complete:
        print(markdown(record))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--variants", default="local,ray-1,ray-2")
    parser.add_argument("--why", default="", help="recorded with the result, e.g. why fewer images than 300")
    parser.add_argument("--backend", default="onnxruntime",
                        help="backend of every variant (default onnxruntime fp32: ~2x PyTorch here, and its masks "
                             "do not depend on the thread count, so the engines' outputs can be compared byte for byte)")
    args = parser.parse_args(argv)
    variants = {"local": (None, 0.0), "ray-1": (1, 2.0), "ray-2": (2, 1.0)}
    chosen = [v.strip() for v in args.variants.split(",")]
    work = Path(tempfile.mkdtemp(prefix="segdeploy-ray-bench-"))
    try:
        images = make_jpegs(work / "images", args.images)
        runs = []
        for name in chosen:
            workers, cpus = variants[name]
            print(f"{name} ...", file=sys.stderr, flush=True)
            runs.append(run_variant(name, images, work / f"out-{name}", workers, cpus, args.backend))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
            write(args, runs, same=None, complete=False)  # a cut-short run still leaves what it measured
        # the engines must agree before their speeds mean anything
        same = compare_outputs(work, chosen, runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write(args, runs, same=same, complete=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
