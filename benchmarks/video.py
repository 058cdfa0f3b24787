#!/usr/bin/env python3
"""Video through ``segdeploy predict``: speed, memory and flicker (issue 21).

1. Speed: a generated 720p clip (30 s at 25 fps by default) end to end (decode, preprocess,
   batch, run, decode, FFV1 encode, atomic rename) against the same frames as a folder of JPEGs
   through ``predict`` (JPEG decode, ..., PNG encode + atomic write) and against the engine's pure
   rate (``Runtime.run`` on seeded random network inputs). One runtime object, one process; each
   measurement once, interleaved video → JPEG → pure, per round. Target: video ≥ 90 % of the JPEG rate.
2. Memory: peak RSS of a ``segdeploy predict`` process (a child; its own VmHWM, :mod:`segdeploy.bench.peak_rss`) on a
   generated 1080p clip (60 s by default). Target: < 1.5 GB.
3. Flicker: a static clip with fresh noise on every frame, with and without ``--smooth 5``: the
   mean absolute frame-to-frame change of the mask, and each frame's mask IoU (>= 128) against the
   unsmoothed one. Target: flicker at most half, IoU ≥ 0.98.

Default backend ``auto`` (its probe, when it runs, is timed apart in ``open_s``); the packaged
u2netp weights. Load averages are recorded before and after each part: a 1-minute load above the
CPU count means other processes took CPU from the measurement. Writes
``benchmarks/results/video_cpu.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import RESULTS, load_average

SRC = str(Path(__file__).resolve().parents[1] / "src")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="u2netp")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--speed-seconds", type=float, default=30.0, help="length of the 720p speed clip")
    parser.add_argument("--memory-seconds", default="60",
                        help="lengths of the 1080p memory clips, comma-separated (peak RSS should not grow with it)")
    parser.add_argument("--flicker-seconds", type=float, default=4.0)
    parser.add_argument("--pure-seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--name", default="video_cpu")
    parser.add_argument("--quick", action="store_true", help="2-s / 2-s / 1-s clips: proves the script works")
    parser.add_argument("--note", default=None, help="a sentence for the result file (why sizes were changed)")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="only write the Markdown again from this result JSON (with --note, if given)")
    args = parser.parse_args(argv)
    if args.quick:
        args.speed_seconds, args.memory_seconds, args.flicker_seconds, args.pure_seconds = 2.0, "2", 1.0, 2.0
    return args


def pure_rate(runtime, input_hw, seconds: float) -> float:
    x = np.random.default_rng(0).standard_normal((1, 3, *input_hw), dtype=np.float32)
    runtime.run(x)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        runtime.run(x)
        count += 1
    return count / (time.perf_counter() - start)


def jpeg_folder(clip: Path, folder: Path) -> int:
    from PIL import Image

    from segdeploy.engine.video import FrameReader

    folder.mkdir(parents=True, exist_ok=True)
    with FrameReader(clip) as reader:
        for frame in reader:
            Image.fromarray(frame.pixels).save(folder / f"{frame.index:05d}.jpg", quality=90)
    return reader.decoded


def speed(args, runtime, spec, tmp: Path) -> dict:
    from segdeploy.engine.video_synth import ClipSpec, make_clip
    from segdeploy.jobs.predict import predict_files
    from segdeploy.jobs.video import VideoOptions, predict_clip

    clip = make_clip(tmp / "speed720.mp4", ClipSpec(width=1280, height=720), seconds=args.speed_seconds)
    frames = jpeg_folder(clip, tmp / "jpegs")
    rounds = []
    for r in range(args.rounds):
        load = load_average()
        print(f"[speed] round {r + 1}: video", flush=True)
        result = predict_clip(clip, {"mask": (tmp / f"out{r}" / "speed720.mkv", "ffv1")}, runtime, spec, VideoOptions())
        print(f"[speed] round {r + 1}: JPEG folder", flush=True)
        summary = predict_files(spec.name, [str(tmp / "jpegs")], tmp / f"jpeg_out{r}", runtime=runtime, progress=False)
        print(f"[speed] round {r + 1}: pure", flush=True)
        pure = pure_rate(runtime, spec.preprocess.size, args.pure_seconds)
        rounds.append({"video_frames_per_s": result.frames_per_s, "video_frames": result.frames,
                       "jpeg_images_per_s": summary.images_per_s, "jpeg_images": summary.written,
                       "pure_frames_per_s": round(pure, 3), "load_before": load, "load_after": load_average()})
    return {"clip": f"{frames} frames 1280x720 at 25 fps (H.264, generated)", "rounds": rounds}


def memory(args, tmp: Path, seconds: float) -> dict:
    from segdeploy.bench.peak_rss import run_measured
    from segdeploy.engine.video_synth import ClipSpec, make_clip

    clip = make_clip(tmp / f"memory1080_{seconds:g}s.mp4", ClipSpec(width=1920, height=1080), seconds=seconds)
    load = load_average()
    start = time.perf_counter()
    # the command's own peak (VmHWM): the rusage of a child forked from this process would include ours
    done = run_measured(["predict", args.model, clip, "-o", tmp / "mem_out", "--backend", args.backend, "--quiet",
                         "--json", tmp / "mem.json"], env=dict(os.environ, PYTHONPATH=SRC), timeout=3600)
    elapsed = time.perf_counter() - start
    record = json.loads((tmp / "mem.json").read_text()) if (tmp / "mem.json").exists() else {}
    return {"clip": f"{int(round(seconds * 25))} frames 1920x1080 at 25 fps (H.264, generated)",
            "exit_status": done.returncode, "peak_rss_mb": round(done.peak_rss_bytes / 2**20, 1),
            "frames": record.get("frames"), "frames_per_s": record.get("frames_per_s"), "seconds": round(elapsed, 1),
            "runtime": record.get("runtime"), "load_before": load, "load_after": load_average()}


def flicker(args, runtime, spec, tmp: Path) -> dict:
    from segdeploy.engine.video_synth import ClipSpec, make_clip
    from segdeploy.jobs.video import FlickerMeter, video_masks

    clip = make_clip(tmp / "static.mp4", ClipSpec(width=640, height=360, static=True, noise=14.0),
                     seconds=args.flicker_seconds, audio=False)
    results, masks = {}, {}
    for window in (1, 5):
        meter, kept = FlickerMeter(), []
        for _, mask in video_masks(runtime, spec, clip, smooth=window):
            meter.update(mask)
            kept.append(mask >= 128)
        results[window], masks[window] = meter.value, kept
    ious = [float(np.count_nonzero(a & b) / max(1, np.count_nonzero(a | b))) for a, b in zip(masks[1], masks[5])]
    return {"clip": f"{len(ious)} frames 640x360, static scene, Gaussian noise sigma 14 per frame",
            "flicker_plain": results[1], "flicker_smooth5": results[5],
            "ratio": round(results[5] / results[1], 4) if results[1] else None,
            "iou_mean": round(float(np.mean(ious)), 5), "iou_min": round(float(np.min(ious)), 5)}


def markdown(p: dict) -> str:
    env, sp, mem, fl = p["environment"], p["speed"], p["memory"], p["flicker"]
    mem = mem if isinstance(mem, list) else [mem]  # one clip in early result files
    rt = p["runtime"] or {}
    lines = [f"# Video through `segdeploy predict` on this CPU — {p['date']}", "",
             f"- machine: {env.get('cpu')} ({env.get('cpu_count')} logical CPUs), shared with other jobs; packages: "
             + ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items() if v) + f", av {p['av']}",
             f"- model {p['model']}, packaged weights; `--backend {p['backend_arg']}` → {rt.get('backend')} "
             f"{rt.get('precision')} (opening, with any probe: {p['open_s']:.1f} s)",
             f"- quick mode: {p['quick']}" + (f"; {p['note']}" if p.get("note") else ""), "",
             "## Speed (end to end, the model already open)", "",
             f"{sp['clip']}; the same frames as JPEG files (quality 90) through `predict`.", "",
             "| round | video frames/s | JPEG folder images/s | pure frames/s | video / JPEG | video / pure | "
             "load before → after |", "|---:|---:|---:|---:|---:|---:|---|"]
    for i, r in enumerate(sp["rounds"]):
        lines.append(f"| {i + 1} | {r['video_frames_per_s']:.2f} | {r['jpeg_images_per_s']:.2f} | "
                     f"{r['pure_frames_per_s']:.2f} | **{r['video_frames_per_s'] / r['jpeg_images_per_s']:.0%}** | "
                     f"{r['video_frames_per_s'] / r['pure_frames_per_s']:.0%} | "
                     f"{'/'.join(map(str, r['load_before']))} → {'/'.join(map(str, r['load_after']))} |")
    lines += ["", "## Memory", "", "`segdeploy predict` on each clip as a child process (peak RSS: the child's own VmHWM; "
              "target < 1536 MB, not growing with the length):", ""]
    for m in mem:
        lines.append(f"- {m['clip']}: peak RSS **{m['peak_rss_mb']:.0f} MB**, exit {m['exit_status']}, {m['frames']} "
                     f"frames in {m['seconds']} s; load {'/'.join(map(str, m['load_before']))} → "
                     f"{'/'.join(map(str, m['load_after']))}")
    lines += ["", "## Flicker", "",
              f"{fl['clip']}: flicker (mean |Δmask| per frame, 0..1) {fl['flicker_plain']:.5f} without smoothing, "
              f"{fl['flicker_smooth5']:.5f} with `--smooth 5` (**{fl['ratio']:.0%}** of it; target ≤ 50 %); mask IoU "
              f"against the unsmoothed frames: mean **{fl['iou_mean']:.4f}**, min {fl['iou_min']:.4f} "
              "(target ≥ 0.98).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    from datetime import datetime, timezone

    import av

    from segdeploy.backends import open_runtime
    from segdeploy.core.environment import environment
    from segdeploy.core.registry import get_spec
    from segdeploy.engine.writers import atomic_write_text

    args = parse_args(argv)
    if args.render is not None:
        payload = json.loads(args.render.read_text())
        payload["note"] = args.note or payload.get("note")
        atomic_write_text(args.render, json.dumps(payload, indent=2, default=str) + "\n")
        atomic_write_text(args.render.with_suffix(".md"), markdown(payload))
        return 0
    spec = get_spec(args.model)
    start = time.perf_counter()
    runtime = open_runtime(args.model, backend=args.backend)
    open_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="segdeploy-video-bench-") as name:
        tmp = Path(name)
        speed_part = speed(args, runtime, spec, tmp)
        flicker_part = flicker(args, runtime, spec, tmp)
        memory_part = [memory(args, tmp, float(length)) for length in str(args.memory_seconds).split(",")]
    payload = {"kind": "video", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": args.model,
               "backend_arg": args.backend, "open_s": round(open_s, 2), "runtime": runtime.describe(),
               "selection": getattr(runtime, "selection", None), "environment": environment(), "av": av.__version__,
               "quick": args.quick, "note": args.note, "speed": speed_part, "memory": memory_part, "flicker": flicker_part}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    json_path = atomic_write_text(args.out_dir / f"{args.name}.json", json.dumps(payload, indent=2, default=str) + "\n")
    md_path = atomic_write_text(args.out_dir / f"{args.name}.md", markdown(payload))
    print(markdown(payload))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
