"""``segdeploy predict`` on video files: the video options and the branch that runs clips (and the
images beside them) when the inputs hold any. PyAV is imported only when a clip is found."""

from __future__ import annotations

import os
from pathlib import Path

VIDEO_HELP = """\
Video (.mp4 .mov .mkv .webm .avi, animated .gif; folders may mix videos and images; needs
pip install 'segdeploy[video]'): every frame goes through the same pipeline as a photo. Per clip,
OUTDIR/<stem>.mkv is the mask video (lossless FFV1: same frame count, rate and size; each frame
equals the PNG mask of that frame); --mask-codec h264 writes <stem>.mp4 (small preview) and
--frames a folder <stem>_frames/ of PNG masks. --cutout adds <stem>_cutout.webm (VP9 with alpha;
--cutout-format mov: ProRes 4444), --bgcolor R,G,B <stem>_cutout.mp4 (H.264, composited). The
source's audio is copied (not re-encoded) and its rotation kept. One clip with -o FILE.mkv|.mp4|
.webm|.mov writes that file. --smooth K averages the probability maps of the last K frames
(causal, no delay); the summary reports the flicker (mean frame-to-frame change of the mask).
A damaged clip is named: its decodable frames are kept (--damaged-video refuse: refused whole).
"""


def video_arguments(parser) -> None:
    group = parser.add_argument_group("video")
    group.add_argument("--mask-codec", choices=("ffv1", "h264"), default="ffv1",
                       help="mask video codec: ffv1 (lossless, .mkv; default) or h264 (small preview, .mp4)")
    group.add_argument("--frames", action="store_true", help="write each clip's masks as a folder of PNGs")
    group.add_argument("--cutout-format", choices=("webm", "mov"), default="webm",
                       help="cut-out video with alpha: webm (VP9 yuva420p; default) or mov (ProRes 4444)")
    group.add_argument("--smooth", type=int, default=1, metavar="K",
                       help="causal moving average of probability maps over K frames (default 1 = off)")
    group.add_argument("--damaged-video", choices=("keep", "refuse"), default="keep",
                       help="a damaged clip: keep its decodable frames (default) or refuse it whole")
    group.add_argument("--max-frames", type=int, default=None, metavar="N",
                       help="stop each clip after N frames")


def _options(args, spec):
    from segdeploy.core.errors import UsageError
    from segdeploy.jobs.video import VideoOptions

    if args.save_prob:
        raise UsageError("--save-prob is for images; video runs write mask videos (drop --save-prob)")
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames must be ≥ 1, got {args.max_frames}")
    options = VideoOptions(mask_codec=args.mask_codec, frames=args.frames, cutout=args.cutout,
                           cutout_format=args.cutout_format, background=args.bgcolor, smooth=args.smooth,
                           damaged=args.damaged_video, max_frames=args.max_frames)
    options.check(spec)
    return options


def _progress(enabled: bool):
    """(context manager, callback(label, done, total)) showing frames, frames/s and ETA per clip."""
    import contextlib
    import time

    if not enabled:
        return contextlib.nullcontext(), None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn())
    tasks: dict[str, tuple[int, float]] = {}

    def update(label: str, done: int, total: int) -> None:
        if label not in tasks:
            tasks[label] = (bar.add_task(label, total=total or None, rate=""), time.perf_counter())
        task, start = tasks[label]
        elapsed = time.perf_counter() - start
        rate = f"{done / elapsed:.1f} frames/s" if elapsed > 0 else ""
        bar.update(task, completed=done, total=max(total, done) if total else None, rate=rate)

    return bar, update


def run_if_video(args, spec, job, console) -> int | None:
    """Run the command when its inputs hold a video; None when they hold none (the image path runs)."""
    from segdeploy.engine.video import is_video

    if "-" in args.inputs or args.output == "-":
        return None
    single = len(args.inputs) == 1 and os.path.isfile(args.inputs[0]) and is_video(args.inputs[0])
    if single and is_video(args.output):
        return _run_single(args, spec, job, console)
    from segdeploy.core.errors import UsageError
    from segdeploy.engine.finder import IMAGE_SUFFIXES, find_images
    from segdeploy.engine.video import VIDEO_SUFFIXES

    found = find_images(args.inputs, args.recursive, exclude=[args.output], suffixes=IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    videos = [(path, rel) for path, rel in found if is_video(path)]
    if not videos:
        return None
    if is_video(args.output):
        raise UsageError(f"-o {args.output} names one video file, but the inputs hold several files; give one clip "
                         "for one output file, or a folder for -o")
    if Path(args.output).suffix.lower() in IMAGE_SUFFIXES:
        raise UsageError(f"-o {args.output} names an image file; a clip's masks go to a folder (-o OUT/) or to one "
                         "video file (.mkv, .mp4, .webm, .mov)")
    if getattr(args, "engine", "local") == "ray":
        raise UsageError("video runs use the local engine; drop --engine ray")
    if Path(args.output).exists() and not Path(args.output).is_dir():
        raise UsageError(f"-o {args.output}: is an existing file, not a folder")
    from segdeploy.engine.video import require_av

    require_av()
    options = _options(args, spec)
    images = [(path, rel) for path, rel in found if not is_video(path)]
    image_summary = _run_images(args, spec, job, console, images) if images else None
    summary = _run_clips(args, spec, job, console, videos, options)
    _report(console, summary)
    if args.json:
        from segdeploy.jobs.predict import write_summary_json

        write_summary_json({**summary.to_dict(), "images": image_summary.to_dict() if image_summary else None},
                           args.json)
    failed = summary.failed or summary.damaged or (image_summary is not None and image_summary.failed)
    return 1 if failed else 0


def _opener(args, spec, job):
    def open_runtime():
        from segdeploy.jobs.predict import warm_up
        from segdeploy.jobs.session import open_model_runtime

        runtime = open_model_runtime(spec.name, job.runtime)
        warm_up(runtime, spec, args.batch_size)
        return runtime
    return open_runtime


def _run_images(args, spec, job, console, images):
    from segdeploy.jobs.predict import predict_files

    summary = predict_files(spec.name, args.inputs, args.output, job, progress=not args.quiet, finder=lambda *_: images,
                            log=lambda text: console.print(text, highlight=False, markup=False))
    for failure in summary.failed:
        console.print(f"[red]failed[/] {failure['path']}: {failure['reason']}", highlight=False)
    console.print(f"images: found {summary.found}, written {summary.written}, skipped {summary.skipped} (already "
                  f"done), failed {len(summary.failed)} in {summary.seconds:.1f} s", highlight=False)
    return summary


def _run_clips(args, spec, job, console, videos, options):
    from segdeploy.jobs.video_job import plan_videos, run_videos

    request = job.runtime
    plan = plan_videos(spec, videos, args.output, options, weights=request.weights, seed=request.seed,
                       max_size=job.max_size, onnx_path=request.onnx_path, calib=request.calib,
                       overwrite=job.overwrite)
    bar, update = _progress(not args.quiet)
    with bar:
        return run_videos(plan, spec, _opener(args, spec, job), options, batch_size=job.batch_size,
                          workers=job.workers, memory_budget=job.memory_budget, progress=update)


def _clip_line(clip: dict) -> str:
    outputs = " + ".join(clip["outputs"])
    flicker = f", flicker {clip['flicker']:.4f}" if clip.get("flicker") is not None else ""
    speed = f", {clip['frames_per_s']:.1f} frames/s" if clip.get("frames_per_s") else ""
    return f"{clip['source']} → {outputs}: {clip['frames']} frames at {clip['rate']:g} fps{speed}{flicker}"


def _report(console, summary) -> None:
    if summary.selection:
        sel = summary.selection
        console.print(f"backend auto → {sel['backend']} {sel['precision']}: {sel['why']}", highlight=False)
    for clip in summary.clips:
        console.print(_clip_line(clip), highlight=False)
        for note in clip.get("notes", []):
            console.print(f"[yellow]note:[/] {clip['source']}: {note}", highlight=False)
    for item in summary.damaged:
        console.print(f"[yellow]damaged[/] {item['path']}: {item['reason']}", highlight=False)
    for failure in summary.failed:
        console.print(f"[red]failed[/] {failure['path']}: {failure['reason']}", highlight=False)
    speed = f", {summary.frames_per_s:.1f} frames/s" if summary.frames_per_s else ""
    if summary.load_seconds:
        speed += f" (after {summary.load_seconds:.1f} s opening the model)"
    flicker = f", flicker {summary.flicker:.4f}" if summary.flicker is not None else ""
    console.print(f"videos: found {summary.found}, written {summary.written}, skipped {summary.skipped} (already done), "
                  f"failed {len(summary.failed)}, damaged {len(summary.damaged)} in {summary.seconds:.1f} s{speed}"
                  f"{flicker}", highlight=False)


def _run_single(args, spec, job, console) -> int:
    from segdeploy.engine.video import require_av
    from segdeploy.jobs.video_job import predict_video_file

    require_av()
    options = _options(args, spec)
    from segdeploy.jobs.video_job import single_file_kind

    single_file_kind(args.output, options)  # refuse a suffix that does not fit before opening the model
    runtime = _opener(args, spec, job)()
    bar, update = _progress(not args.quiet)
    with bar:
        clip = predict_video_file(spec, args.inputs[0], args.output, runtime, options, overwrite=job.overwrite,
                                  batch_size=job.batch_size, workers=job.workers, memory_budget=job.memory_budget,
                                  progress=update)
    console.print(_clip_line(clip.__dict__), highlight=False)
    for note in clip.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    if clip.damage:
        console.print(f"[yellow]damaged[/] {clip.source}: {clip.damage}", highlight=False)
    if args.json:
        from segdeploy.jobs.predict import weights_of, write_summary_json

        write_summary_json({**clip.__dict__, "runtime": runtime.describe() if hasattr(runtime, "describe") else None,
                            "weights": weights_of(runtime)}, args.json)
    return 1 if clip.damage else 0
