"""Video through the image pipeline: frames of a clip are items of
:func:`segdeploy.engine.pipeline.stream_predictions`, batched and decoded exactly as photos are, so a
frame's mask equals the mask of that frame saved as a PNG and predicted alone.

Per clip: a :class:`~segdeploy.engine.video.FrameReader` decodes ahead in a thread, the pipeline
preprocesses, infers and decodes, then (in frame order) an optional causal moving average of the
probability maps (``smooth``), the flicker measure, and the :class:`~segdeploy.engine.video_writer.
VideoWriter` s that encode in their own threads. Nothing holds more than a few frames.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from segdeploy.core.errors import ImageReadError, UsageError
from segdeploy.core.specs import ModelSpec
from segdeploy.engine.pipeline import DEFAULT_MEMORY_BUDGET, StageTimes, StreamOptions, stream_predictions
from segdeploy.engine.video import FrameReader, VideoFrame
from segdeploy.engine.video_writer import VideoWriter
from segdeploy.tasks import Prediction, get_task

MASK_CODECS = ("ffv1", "h264")
CUTOUT_SUFFIXES = {".webm": "vp9-alpha", ".mov": "prores-alpha"}
DAMAGE_POLICIES = ("keep", "refuse")


@dataclass(frozen=True)
class VideoOptions:
    """What to write for each clip, and how.

    Attributes:
        mask_codec: "ffv1" (lossless, MKV) or "h264" (preview, MP4).
        frames: write the mask as a folder of PNGs instead of a video.
        cutout: write the cut-out with alpha (``cutout_format``: "webm" VP9 or "mov" ProRes 4444).
        background: composite onto this colour into an H.264 MP4 instead (implies a cut-out).
        smooth: frames in the causal moving average of probability maps (1 = off).
        damaged: "keep" the decodable frames of a damaged clip, or "refuse" the clip whole.
        max_frames: stop each clip after this many frames (None: all).
    """

    mask_codec: str = "ffv1"
    frames: bool = False
    cutout: bool = False
    cutout_format: str = "webm"
    background: tuple[int, ...] | None = None
    smooth: int = 1
    damaged: str = "keep"
    max_frames: int | None = None

    def check(self, spec: ModelSpec) -> None:
        if self.mask_codec not in MASK_CODECS:
            raise UsageError(f"--mask-codec {self.mask_codec}: use one of {', '.join(MASK_CODECS)}")
        if self.smooth < 1:
            raise UsageError(f"--smooth {self.smooth}: give a window of 1 frame (off) or more")
        if self.smooth > 1 and spec.task == "semantic":
            raise UsageError(f"--smooth averages one probability map per frame; {spec.name} has one per class "
                             "(too large to keep several frames of); drop --smooth")
        if self.damaged not in DAMAGE_POLICIES:
            raise UsageError(f"--damaged-video {self.damaged}: use keep or refuse")

    def manifest(self) -> dict[str, Any]:
        """What changes a clip's outputs (compared on a rerun)."""
        data = asdict(self)
        data["background"] = list(self.background) if self.background else None
        return data


class TemporalSmoother:
    """Causal moving average of probability maps over the last ``window`` frames (no look-ahead, so
    no delay): frame t gets the mean of the maps of frames max(0, t - window + 1) .. t."""

    def __init__(self, window: int, spec: ModelSpec):
        self.window, self.spec, self.task = window, spec, get_task(spec)
        self.maps: deque[np.ndarray] = deque(maxlen=window)

    def push(self, pred: Prediction) -> Prediction:
        if self.window <= 1:
            return pred
        self.maps.append(np.asarray(pred.map, dtype=np.float32))
        mean = np.mean(np.stack(self.maps), axis=0, dtype=np.float32) if len(self.maps) > 1 else self.maps[0]
        return Prediction(map=mean, mask=self.task.mask_from_map(mean, self.spec))


class FlickerMeter:
    """Mean absolute frame-to-frame change of the mask image, on the 0..1 scale (0: masks never change)."""

    def __init__(self):
        self.previous: np.ndarray | None = None
        self.total = 0.0
        self.pairs = 0

    def update(self, mask: np.ndarray) -> None:
        scale = 255.0 if mask.dtype == np.uint8 else 1.0
        if self.previous is not None and self.previous.shape == mask.shape:
            diff = np.abs(mask.astype(np.int16) - self.previous.astype(np.int16))
            self.total += float(diff.mean()) / scale
            self.pairs += 1
        self.previous = mask

    @property
    def value(self) -> float | None:
        return round(self.total / self.pairs, 6) if self.pairs else None


def frame_outputs(spec: ModelSpec, frame: VideoFrame, pred: Prediction, options: VideoOptions) -> dict[str, np.ndarray]:
    """The arrays one frame contributes: the mask image, and the cut-out (RGBA) or composite (RGB)."""
    task = get_task(spec)
    mask, _ = task.mask_image(pred)
    out = {"mask": mask}
    if options.background is not None:
        out["cutout"] = np.ascontiguousarray(task.cutout(frame.pixels, pred, options.background)[..., :3])
    elif options.cutout:
        out["cutout"] = task.cutout(frame.pixels, pred, None)
    return out


def stream_video(reader: FrameReader, runtime, spec: ModelSpec, *, options: VideoOptions, batch_size: int = 1,
                 workers: int | None = None, memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
                 times: StageTimes | None = None) -> Iterator[tuple[VideoFrame, Prediction, dict[str, np.ndarray]]]:
    """(frame, prediction, output arrays) per frame, in order, through the one image pipeline.

    Without smoothing the output arrays are made in the pipeline's decode threads (in parallel);
    with it they are made here, in order, after the average.
    """
    smoother = TemporalSmoother(options.smooth, spec)
    parallel = options.smooth <= 1

    def sink(frame: VideoFrame, image, pred: Prediction):
        return frame_outputs(spec, frame, pred, options) if parallel else None

    stream = StreamOptions(batch_size=batch_size, workers=workers, max_side="spec", memory_budget=memory_budget)
    for outcome in stream_predictions(reader, lambda frame: frame.pixels, runtime, spec, stream, sink=sink,
                                      times=times):
        if not outcome.ok:
            raise outcome.error
        pred = outcome.prediction
        arrays = outcome.sink_result
        if not parallel:
            pred = smoother.push(pred)
            arrays = frame_outputs(spec, outcome.item, pred, options)
        yield outcome.item, pred, arrays


@dataclass
class ClipResult:
    """What became of one clip."""

    source: str
    outputs: list[str] = field(default_factory=list)
    frames: int = 0
    source_frames: int = 0
    rate: float = 0.0
    seconds: float = 0.0
    frames_per_s: float | None = None
    flicker: float | None = None
    damage: str | None = None
    notes: list[str] = field(default_factory=list)


def predict_clip(source, targets: dict[str, tuple[Path, str]], runtime, spec: ModelSpec, options: VideoOptions, *,
                 batch_size: int = 1, workers: int | None = None, memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
                 on_frame: Callable[[int, int], None] | None = None, times: StageTimes | None = None) -> ClipResult:
    """Predict every frame of ``source`` and write ``targets`` (role → (path, writer kind)).

    Raises:
        ImageReadError: the clip cannot be opened, yields no frame, or is damaged and
            ``options.damaged`` is "refuse" (nothing is written).
        KeyboardInterrupt: the temporary files are deleted first.
    """
    start = time.perf_counter()
    reader = FrameReader(source, limit=options.max_frames)
    info = reader.info
    result = ClipResult(source=str(source), source_frames=info.frames, rate=round(float(info.rate), 6))
    writers: dict[str, VideoWriter] = {}
    flicker = FlickerMeter()
    try:
        for frame, _, arrays in stream_video(reader, runtime, spec, options=options, batch_size=batch_size,
                                             workers=workers, memory_budget=memory_budget, times=times):
            if not writers:
                rotation = reader.first_rotation()
                writers = {role: VideoWriter(path, kind, rate=info.rate, time_base=info.time_base, rotation=rotation,
                                             audio_from=source if kind != "frames" else None,
                                             audio_codec=info.audio_codec)
                           for role, (path, kind) in targets.items()}
            flicker.update(arrays["mask"])
            for role, writer in writers.items():
                writer.write(frame.pts, arrays[role])
            result.frames += 1
            if on_frame:
                on_frame(result.frames, info.frames)
        problem = reader.problem()
        if result.frames == 0 or (problem and options.damaged == "refuse"):
            why = "refused whole (--damaged-video refuse)" if result.frames else "refused whole"
            raise ImageReadError(source, f"{problem or 'no frame could be decoded'}; {why}, nothing written")
        if problem:
            result.damage = f"{problem}; the {result.frames} decodable frame(s) were kept"
        for writer in writers.values():
            writer.finish()
            result.outputs.append(str(writer.target))
            if writer.note:
                result.notes.append(writer.note)
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        reader.close()
    result.seconds = round(time.perf_counter() - start, 3)
    result.frames_per_s = round(result.frames / result.seconds, 3) if result.seconds > 0 else None
    result.flicker = flicker.value
    return result


def video_masks(runtime, spec: ModelSpec, path, *, batch_size: int = 1, smooth: int = 1,
                max_frames: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, mask) for every frame of the video at ``path``, streamed (see ``Session.video``)."""
    options = VideoOptions(smooth=smooth, max_frames=max_frames)
    options.check(spec)
    with FrameReader(path, limit=max_frames) as reader:
        for frame, _, arrays in stream_video(reader, runtime, spec, options=options, batch_size=batch_size,
                                             workers=2):
            yield frame.index, arrays["mask"]
        problem = reader.problem()
    if problem and reader.decoded == 0:
        raise ImageReadError(path, problem)
