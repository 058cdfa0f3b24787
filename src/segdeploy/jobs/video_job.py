"""``segdeploy predict`` on videos: planning the outputs of each clip in an output folder (sharing
the folder's manifest with the images of the same run), running the clips one after another with
one runtime, and the single-file form (one clip → ``-o FILE.mkv|.mp4|.webm|.mov``)."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from segdeploy.core.errors import ImageReadError, UsageError
from segdeploy.core.specs import ModelSpec
from segdeploy.engine.pipeline import DEFAULT_MEMORY_BUDGET, StageTimes
from segdeploy.engine.transforms import InputPolicy
from segdeploy.jobs.manifest import Manifest, differences, run_settings, runtime_settings
from segdeploy.jobs.outputs import weights_identity
from segdeploy.jobs.plan import failure_reason, source_id
from segdeploy.jobs.video import CUTOUT_SUFFIXES, ClipResult, VideoOptions, predict_clip


@dataclass
class VideoSummary:
    """What a video run did; every number the CLI prints is here."""

    model: str
    found: int = 0
    written: int = 0
    skipped: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    damaged: list[dict[str, str]] = field(default_factory=list)
    clips: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    load_seconds: float = 0.0
    frames: int = 0
    frames_per_s: float | None = None
    flicker: float | None = None
    smooth: int = 1
    runtime: dict[str, Any] | None = None
    selection: dict[str, Any] | None = None
    weights: dict[str, Any] | None = None
    stages: dict[str, Any] | None = None
    output_dir: str = ""
    interrupted: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def clip_targets(rel: Path, out_dir: Path, options: VideoOptions, *, keep_suffix: bool = False) -> dict[str, tuple[Path, str]]:
    """role → (output path, writer kind) for the clip at ``rel`` (relative to the inputs' anchor)."""
    stem = rel.name if keep_suffix else rel.stem
    base = out_dir / rel.parent
    if options.frames:
        targets = {"mask": (base / f"{stem}_frames", "frames")}
    elif options.mask_codec == "h264":
        targets = {"mask": (base / f"{stem}.mp4", "h264-mask")}
    else:
        targets = {"mask": (base / f"{stem}.mkv", "ffv1")}
    if options.background is not None:
        targets["cutout"] = (base / f"{stem}_cutout.mp4", "h264-rgb")
    elif options.cutout:
        suffix = f".{options.cutout_format}"
        if suffix not in CUTOUT_SUFFIXES:
            raise UsageError(f"--cutout-format {options.cutout_format}: use webm (VP9 with alpha) or mov (ProRes 4444)")
        targets["cutout"] = (base / f"{stem}_cutout{suffix}", CUTOUT_SUFFIXES[suffix])
    return targets


def single_file_kind(target: str, options: VideoOptions) -> str:
    """The writer kind for ``-o FILE`` with one clip, chosen by the file's suffix."""
    suffix = Path(target).suffix.lower()
    if options.background is not None:
        if suffix != ".mp4":
            raise UsageError(f"-o {target}: --bgcolor writes an H.264 MP4; name the output .mp4")
        return "h264-rgb"
    if options.cutout:
        if suffix not in CUTOUT_SUFFIXES:
            raise UsageError(f"-o {target}: a cut-out with alpha is written as .webm (VP9) or .mov (ProRes 4444); "
                             "for an opaque video add --bgcolor R,G,B and name it .mp4")
        return CUTOUT_SUFFIXES[suffix]
    if suffix == ".mp4":
        return "h264-mask"
    if suffix == ".mkv":
        return "ffv1" if options.mask_codec == "ffv1" else "h264-mask-mkv"
    raise UsageError(f"-o {target}: a mask video is written as .mkv (lossless FFV1) or .mp4 (H.264 preview); "
                     "for a cut-out add --cutout")


@dataclass
class VideoPlan:
    """The clips left to do in ``out_dir`` and the manifest they are recorded in."""

    out_dir: Path
    settings: dict[str, Any]
    manifest: Manifest | None
    todo: list[tuple[Path, dict[str, tuple[Path, str]], str]]
    summary: VideoSummary


def plan_videos(spec: ModelSpec, videos: list[tuple[Path, Path]], out_dir, options: VideoOptions, *, weights=None,
                seed: int = 0, max_size="spec", onnx_path=None, calib=None, overwrite: bool = False) -> VideoPlan:
    """Decide which clips to predict; finished ones (same source, same options, outputs present) are skipped.

    Raises:
        UsageError: the folder was made with other settings, an output would replace an input or
            another clip's output, or outputs exist with no manifest (without ``overwrite``).
    """
    out_dir = Path(out_dir)
    options.check(spec)
    policy = InputPolicy.for_model(spec, max_size)
    outputs = {"cutout": options.cutout or options.background is not None,
               "background": list(options.background) if options.background else None, "save_prob": False}
    settings = run_settings(spec, policy, weights_identity(spec, weights, seed, onnx_path, calib), outputs)
    manifest = None if overwrite else Manifest.load(out_dir)
    if manifest is not None:
        manifest.refuse_if_changed(settings, out_dir)
    summary = VideoSummary(model=spec.name, found=len(videos), output_dir=str(out_dir), smooth=options.smooth)
    stems: dict[Path, int] = {}
    for _, rel in videos:
        stems[rel.parent / rel.stem] = stems.get(rel.parent / rel.stem, 0) + 1
    inputs = {os.path.realpath(p) for p, _ in videos}
    plan = VideoPlan(out_dir, settings, manifest, [], summary)
    taken: set[str] = set()
    for path, rel in videos:
        targets = clip_targets(rel, out_dir, options, keep_suffix=stems[rel.parent / rel.stem] > 1)
        key = targets["mask"][0].relative_to(out_dir).as_posix()
        for target, _ in targets.values():
            if os.path.realpath(target) in inputs or key in taken:
                raise UsageError(f"the output {target} of {path} would replace an input or another clip's output; "
                                 "choose another -o. Nothing was written.")
        taken.add(key)
        entry = (manifest.files.get(key) if manifest else None) or {}
        present = [t for t, _ in targets.values() if t.exists()]
        if entry.get("status") == "written" and entry.get("source") == source_id(path) and len(present) == len(targets):
            if entry.get("video") == options.manifest():
                summary.skipped += 1
                continue
            raise UsageError(f"{key} in {out_dir} was made with other video options: "
                             + "; ".join(differences(entry.get("video") or {}, options.manifest()))
                             + ". Nothing was changed. Pass --overwrite to recompute it, or choose another -o.")
        if present and manifest is None and not overwrite:
            raise UsageError(f"{present[0]} exists and {out_dir} has no segdeploy manifest saying how it was made; "
                             "pass --overwrite to replace it, or choose another -o")
        plan.todo.append((path, targets, key))
    return plan


def _check_runtime(plan: VideoPlan, describe) -> None:
    ran = runtime_settings(describe)
    manifest = plan.manifest
    if manifest is not None and manifest.runtime and ran and manifest.files:
        changes = differences(manifest.runtime, ran)
        if changes:
            raise UsageError(f"{plan.out_dir} holds masks made with another backend or precision: " + "; ".join(changes)
                             + ". Nothing was changed. Pass --overwrite to recompute them, or choose another -o.")
    if manifest is None:
        manifest = plan.manifest = Manifest(settings=plan.settings)
    manifest.runtime = ran
    manifest.save(plan.out_dir)


def run_videos(plan: VideoPlan, spec: ModelSpec, open_runtime: Callable[[], Any], options: VideoOptions, *,
               batch_size: int = 1, workers: int | None = None, memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
               progress=None) -> VideoSummary:
    """Predict the clips of ``plan`` one after another, recording each in the manifest when its
    outputs are in place. ``progress(label, done, total)`` is called per frame.

    A clip that cannot be read is recorded as failed and the next one goes on; a damaged clip whose
    frames were kept is recorded as written and listed in ``summary.damaged``.
    """
    from segdeploy.jobs.predict import weights_of

    summary = plan.summary
    start = time.perf_counter()
    if not plan.todo:
        summary.seconds = round(time.perf_counter() - start, 3)
        return summary
    runtime = open_runtime()
    summary.runtime = runtime.describe() if hasattr(runtime, "describe") else None
    summary.selection = getattr(runtime, "selection", None)
    summary.weights = weights_of(runtime)
    _check_runtime(plan, summary.runtime)
    summary.load_seconds = round(time.perf_counter() - start, 3)
    times = StageTimes()
    flickers = []
    try:
        for path, targets, key in plan.todo:
            label = Path(path).name
            entry: dict[str, Any] = {"source": source_id(path), "video": options.manifest()}
            try:
                clip = predict_clip(path, targets, runtime, spec, options, batch_size=batch_size, workers=workers,
                                    memory_budget=memory_budget, times=times,
                                    on_frame=(lambda done, total, label=label: progress(label, done, total))
                                    if progress else None)
            except ImageReadError as exc:
                summary.failed.append({"path": str(path), "reason": failure_reason(exc)})
                plan.manifest.files[key] = {**entry, "status": "failed", "reason": failure_reason(exc)}
                plan.manifest.save(plan.out_dir)
                continue
            _record(summary, clip, path)
            if clip.flicker is not None:
                flickers.append((clip.flicker, clip.frames))
            plan.manifest.files[key] = {**entry, "status": "written", "frames": clip.frames,
                                        "outputs": [Path(o).relative_to(plan.out_dir).as_posix() for o in clip.outputs],
                                        **({"damage": clip.damage} if clip.damage else {})}
            plan.manifest.save(plan.out_dir)
    except KeyboardInterrupt:
        summary.interrupted = True
        raise
    finally:
        summary.seconds = round(time.perf_counter() - start, 3)
        summary.stages = times.to_dict()
        loop = summary.seconds - summary.load_seconds
        summary.frames_per_s = round(summary.frames / loop, 3) if loop > 0 and summary.frames else None
        if flickers:
            summary.flicker = round(sum(f * n for f, n in flickers) / sum(n for _, n in flickers), 6)
    return summary


def _record(summary: VideoSummary, clip: ClipResult, path) -> None:
    summary.written += 1
    summary.frames += clip.frames
    summary.clips.append(asdict(clip))
    if clip.damage:
        summary.damaged.append({"path": str(path), "reason": clip.damage})


def predict_video_file(spec: ModelSpec, source: str, target: str, runtime, options: VideoOptions, *,
                       overwrite: bool = False, batch_size: int = 1, workers: int | None = None,
                       memory_budget: int | None = DEFAULT_MEMORY_BUDGET, progress=None) -> ClipResult:
    """One clip to one file (its kind from the suffix of ``target``), written atomically.

    Raises:
        UsageError: the target exists (without ``overwrite``), is a folder, or its suffix does not fit.
        ImageReadError: the clip cannot be read (or is damaged and ``options.damaged`` is "refuse").
    """
    options.check(spec)
    kind = single_file_kind(target, options)
    if Path(target).is_dir():
        raise UsageError(f"-o {target} is a folder; give a file name such as {Path(target) / 'mask.mkv'}")
    if Path(target).exists() and not overwrite:
        raise UsageError(f"-o {target} exists; pass --overwrite to replace it")
    if os.path.realpath(target) == os.path.realpath(source):
        raise UsageError(f"-o {target} is the input; choose another name")
    label = Path(source).name
    return predict_clip(source, {"mask" if kind in ("ffv1", "h264-mask", "h264-mask-mkv") else "cutout": (Path(target), kind)},
                        runtime, spec, options, batch_size=batch_size, workers=workers, memory_budget=memory_budget,
                        on_frame=(lambda done, total: progress(label, done, total)) if progress else None)
