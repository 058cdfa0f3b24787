#!/usr/bin/env python3
"""segdeploy's default on the trained U²-Netp against rembg, on the same photos and the same ONNX.

Issue 22, Build 7: segdeploy's default configuration (``--backend auto``, as `predict` gets it on
this machine) side by side with rembg's ``remove(..., session=new_session("u2netp"),
only_mask=True)``.

* rembg runs in its own environment (``--rembg-python``, default ``/tmp/rembg-venv/bin/python``:
  ``python3 -m venv /tmp/rembg-venv && /tmp/rembg-venv/bin/pip install rembg onnxruntime``) as a
  persistent worker process, with the same u2netp ONNX: segdeploy's export of its packaged
  weights, placed as ``<U2NET_HOME>/models/u2netp/u2netp.onnx`` in a temporary U2NET_HOME (rembg
  takes an existing file as it is: no download).
* 40 photo crops (JPEG): the 5 packaged photographs and 5 of scikit-image's, 4 crops each.
* Each round: every crop read from disk, its mask computed and written as PNG; segdeploy through
  ``segdeploy.jobs.predict.predict_files`` (what `predict DIR -o OUT --overwrite` runs), rembg
  through its Python API in a loop. One untimed warm-up round each, then ``--rounds`` alternating
  rounds (segdeploy, rembg, segdeploy, ...); images/s = 40 / round wall time, median over rounds.
* segdeploy's default is judged against PyTorch fp32 on the held-out photos
  (:func:`segdeploy.verify.runtime_gate.judge_runtime`).

Writes ``benchmarks/results/vs_rembg_cpu.json`` and ``.md``; records the load average per round.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import RESULTS, load_average

REPO = Path(__file__).resolve().parents[1]
TARGET = 1.5

WORKER = r"""
import io, sys, time
from pathlib import Path
from PIL import Image
from rembg import new_session, remove
import onnxruntime, rembg
session = new_session("u2netp")
print("ready", rembg.__version__, onnxruntime.__version__, flush=True)
for line in sys.stdin:
    src, dst = line.split()
    files = sorted(Path(src).glob("*.jpg"))
    t0 = time.perf_counter()
    for f in files:
        mask = remove(Image.open(f), session=session, only_mask=True)
        mask.save(Path(dst) / (f.stem + ".png"))
    print(len(files), time.perf_counter() - t0, flush=True)
"""


def make_crops(folder: Path) -> list[str]:
    from PIL import Image

    from segdeploy.backends.auto import held_out_photos, photo_crops

    folder.mkdir(parents=True, exist_ok=True)
    photos = [(name, image) for name, image in held_out_photos() if "-" not in name]
    import skimage.data as data

    left, _, _ = data.stereo_motorcycle()
    photos += [("rocket", data.rocket()), ("cat", data.cat()), ("motorcycle", left),
               ("immunohistochemistry", data.immunohistochemistry()), ("retina", data.retina())]
    names = []
    for name, image in photos:
        image = np.ascontiguousarray(np.asarray(image)[..., :3]).astype(np.uint8)
        crops = [("whole", image), *photo_crops(image)]
        for crop_name, crop in crops:
            Image.fromarray(crop).save(folder / f"{name}-{crop_name}.jpg", quality=92)
            names.append(f"{name}-{crop_name}")
    return names


def start_rembg(python: str, onnx: Path, home: Path) -> tuple[subprocess.Popen, str]:
    target = home / "models" / "u2netp"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(onnx, target / "u2netp.onnx")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(U2NET_HOME=str(home), OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", ""))
    if not env["OMP_NUM_THREADS"]:
        env.pop("OMP_NUM_THREADS")
    proc = subprocess.Popen([python, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    first = proc.stdout.readline().split()
    if not first or first[0] != "ready":
        proc.kill()
        raise RuntimeError("rembg worker did not start (is rembg installed in --rembg-python?)")
    return proc, f"rembg {first[1]}, onnxruntime {first[2]}"


def rembg_round(proc, src: Path, dst: Path) -> float:
    dst.mkdir(parents=True, exist_ok=True)
    proc.stdin.write(f"{src} {dst}\n")
    proc.stdin.flush()
    count, seconds = proc.stdout.readline().split()
    return int(count) / float(seconds)


def segdeploy_round(src: Path, dst: Path, runtime) -> float:
    from segdeploy.jobs.options import PredictOptions
    from segdeploy.jobs.predict import predict_files

    t0 = time.perf_counter()
    summary = predict_files("u2netp", [str(src)], dst, PredictOptions(overwrite=True), runtime=runtime, progress=False)
    assert summary.written == 40, summary
    return summary.written / (time.perf_counter() - t0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rembg-python", default="/tmp/rembg-venv/bin/python")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    with tempfile.TemporaryDirectory(prefix="segdeploy-vs-rembg-") as tmp:
        scratch = Path(tmp)
        os.environ.setdefault("SEGDEPLOY_CACHE", str(scratch / "cache"))
        from segdeploy.backends import open_runtime
        from segdeploy.convert.export_cache import cached_export
        from segdeploy.core.environment import environment
        from segdeploy.core.registry import get_spec
        from segdeploy.engine.writers import atomic_write_text
        from segdeploy.verify.runtime_gate import judge_runtime
        from segdeploy.zoo import create_model

        names = make_crops(scratch / "crops")
        module = create_model("u2netp", "official")
        onnx = cached_export(module, spec=module.segdeploy_spec)
        runtime = open_runtime("u2netp", backend="auto", weights="official")
        verdict = judge_runtime(get_spec("u2netp"), runtime, weights="official")
        proc, rembg_versions = start_rembg(args.rembg_python, onnx, scratch / "u2net_home")
        rounds = []
        try:
            segdeploy_round(scratch / "crops", scratch / "out-seg", runtime)  # warm-up
            rembg_round(proc, scratch / "crops", scratch / "out-rembg")
            for i in range(args.rounds):
                before = load_average()
                seg = segdeploy_round(scratch / "crops", scratch / "out-seg", runtime)
                rem = rembg_round(proc, scratch / "crops", scratch / "out-rembg")
                rounds.append({"segdeploy_images_per_s": round(seg, 3), "rembg_images_per_s": round(rem, 3),
                               "load_before": before, "load_after": load_average()})
        finally:
            proc.stdin.close()
            proc.wait(timeout=30)
    seg_med = statistics.median(r["segdeploy_images_per_s"] for r in rounds)
    rem_med = statistics.median(r["rembg_images_per_s"] for r in rounds)
    ratio = seg_med / rem_med
    sel = runtime.selection or {}
    payload = {"benchmark": "vs_rembg", "photos": len(names), "photo_names": names, "rounds": rounds,
               "segdeploy": {"configuration": f"{runtime.name} {runtime.precision}", "selection": sel,
                             "images_per_s_median": round(seg_med, 3),
                             "gate": {"passed": verdict.passed, "judged": verdict.judged,
                                      "failures": verdict.failures, "measures": verdict.measures}},
               "rembg": {"versions": rembg_versions, "images_per_s_median": round(rem_med, 3),
                         "onnx": "segdeploy's export of the packaged u2netp weights"},
               "ratio": round(ratio, 3), "target": TARGET, "environment": environment()}
    lines = ["# segdeploy's default vs rembg, trained U²-Netp, CPU (issue 22, Build 7)", "",
             f"{len(names)} photo crops (JPEG; 5 packaged photographs + 5 scikit-image ones, whole and 3 crops each); "
             f"each round reads, predicts and writes every mask as PNG; {args.rounds} alternating rounds after one "
             f"warm-up each; rembg ({rembg_versions}) runs segdeploy's export of the same weights "
             "in its own venv.", "",
             "| round | segdeploy images/s | rembg images/s | load before → after |", "|---|---|---|---|"]
    for i, r in enumerate(rounds, 1):
        lines.append(f"| {i} | {r['segdeploy_images_per_s']:.2f} | {r['rembg_images_per_s']:.2f} | "
                     f"{r['load_before']} → {r['load_after']} |")
    lines += ["", f"segdeploy's default here: **{runtime.name} {runtime.precision}** "
              f"({sel.get('source')}: {sel.get('why')}).",
              f"Its gate on {verdict.judged} held-out photos: **{'passed' if verdict.passed else 'FAILED'}**"
              + ("" if verdict.passed else f" ({verdict.failures[0]})") + ".",
              f"Median ratio: **{ratio:.2f}×** rembg's images/s (target {TARGET}×: "
              f"{'reached' if ratio >= TARGET else 'not reached'}).", ""]
    atomic_write_text(args.out_dir / "vs_rembg_cpu.json", json.dumps(payload, indent=2, default=str) + "\n")
    atomic_write_text(args.out_dir / "vs_rembg_cpu.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
