"""Reading video files frame by frame with PyAV (FFmpeg in its wheel), for the image pipeline.

A :class:`FrameReader` decodes one file in a background thread into a small bounded queue and
hands out :class:`VideoFrame` items (index, timestamp, RGB pixels) in order, so that the pipeline's
reader threads only preprocess and the file is never held in memory: at most ``queue_frames``
decoded frames wait at once, whatever the length of the clip.

Damaged files: a container that cannot be opened, has no video stream or yields no frame is refused
whole (:class:`~segdeploy.core.errors.ImageReadError`). A packet that fails to decode is skipped and
counted; a file that ends before the frame count its header announces is reported as truncated.
The caller decides, from :attr:`FrameReader.damage`, whether the decodable frames are kept.

Frames are given in their stored orientation; the rotation a player applies (the display matrix)
is read from the first frame and copied to every output by the writers, so masks line up.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from segdeploy.core.errors import ImageReadError, UsageError

#: Suffixes read as video (an animated GIF is a video; a still GIF is a one-frame video).
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif")

INSTALL_HINT = "pip install 'segdeploy[video]'"

#: consecutive undecodable packets after which the rest of a file is given up
MAX_CONSECUTIVE_ERRORS = 50


def is_video(path) -> bool:
    return Path(str(path)).suffix.lower() in VIDEO_SUFFIXES


def require_av():
    """The ``av`` module, or a UsageError (exit 2) naming the extra that installs it."""
    try:
        import av
    except ImportError:
        raise UsageError(f"video input and output need PyAV, which is not installed: {INSTALL_HINT}") from None
    av.logging.set_level(av.logging.PANIC)  # damage is reported once, by name, not per packet on stderr
    return av


@dataclass(frozen=True)
class VideoInfo:
    """What the header of a video says (``frames`` is an estimate when the container has no count)."""

    width: int
    height: int
    rate: Fraction
    time_base: Fraction
    frames: int
    codec: str
    has_audio: bool
    audio_codec: str | None


@dataclass
class VideoFrame:
    """One decoded frame: ``index`` counts decoded frames from 0; ``pts`` in the stream's time base."""

    index: int
    pts: int | None
    pixels: np.ndarray


def _open(path, av):
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise ImageReadError(path, f"not a video file FFmpeg can open ({_reason(exc)}); refused whole, "
                                   "nothing decodable") from None
    if not container.streams.video:
        container.close()
        raise ImageReadError(path, "has no video stream; refused whole")
    return container


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(": '")[0] if text else type(exc).__name__


def probe_video(path) -> VideoInfo:
    """The header of ``path``. Raises ImageReadError (named) when it is not a readable video."""
    av = require_av()
    container = _open(path, av)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(25)
        frames = int(stream.frames or 0)
        if frames <= 0:
            seconds = None
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / 1_000_000
            frames = int(round(seconds * float(rate))) if seconds else 0
        audio = container.streams.audio[0] if container.streams.audio else None
        return VideoInfo(width=stream.codec_context.width, height=stream.codec_context.height, rate=Fraction(rate),
                         time_base=Fraction(stream.time_base or Fraction(1, 1000)), frames=frames,
                         codec=stream.codec_context.name, has_audio=audio is not None,
                         audio_codec=audio.codec_context.name if audio is not None else None)
    finally:
        container.close()


@dataclass
class Damage:
    """What went wrong while decoding: packets skipped, and whether the file ended early."""

    skipped_packets: int = 0
    first_error: str | None = None
    stopped_early: bool = False

    def describe(self, decoded: int, expected: int) -> str | None:
        """One sentence for the run summary, or None for a clean file."""
        parts = []
        if self.skipped_packets:
            parts.append(f"{self.skipped_packets} packet(s) could not be decoded ({self.first_error})")
        if self.stopped_early:
            parts.append(f"decoding stopped on an unrecoverable error ({self.first_error})")
        # containers round their duration; a shortfall of more than one frame is a cut file
        if expected and decoded < expected - 1:
            parts.append(f"the file ends after {decoded} of the {expected} frames its header announces "
                         "(truncated)")
        return "; ".join(parts) or None


class FrameReader:
    """Iterate over the frames of one video, decoded ahead in a daemon thread.

    Iteration yields :class:`VideoFrame` in order. :meth:`close` (also on leaving a ``with``)
    stops the thread within one frame. ``limit`` stops after that many frames (benchmarks, tests).
    """

    def __init__(self, path, *, queue_frames: int = 8, limit: int | None = None):
        self.path = path
        self.av = require_av()
        self.info = probe_video(path)
        self.limit = limit
        self.decoded = 0
        self.rotation = 0
        self.damage = Damage()
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_frames))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._first = threading.Event()
        self._thread = threading.Thread(target=self._decode_all, name="segdeploy-video-read", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _decode_all(self) -> None:
        av = self.av
        try:
            container = _open(self.path, av)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._error = exc
            self._first.set()
            self._put(None)
            return
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in self._frames(container, stream):
                if self.decoded == 0:
                    self.rotation = int(getattr(frame, "rotation", 0) or 0)
                    self._first.set()
                item = VideoFrame(self.decoded, frame.pts, frame.to_ndarray(format="rgb24"))
                if not self._put(item):
                    return
                self.decoded += 1
                if self.limit is not None and self.decoded >= self.limit:
                    break
        except BaseException as exc:  # noqa: BLE001 - a bug or MemoryError: the consumer raises it
            self._error = exc
        finally:
            container.close()
            self._first.set()
            self._put(None)

    def _frames(self, container, stream):
        """Decoded frames; undecodable packets are skipped and counted, a broken demuxer stops."""
        av = self.av
        consecutive = 0
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError as exc:  # the container itself is broken from here on
                self._note(exc, stop=True)
                return
            try:
                frames = packet.decode()
                consecutive = 0
            except av.FFmpegError as exc:
                self._note(exc)
                consecutive += 1
                if consecutive >= MAX_CONSECUTIVE_ERRORS:
                    self._note(exc, stop=True)
                    return
                continue
            for frame in frames:
                if getattr(frame, "is_corrupt", False):
                    self._note(ValueError("a frame was marked corrupt by the decoder"))
                    continue
                yield frame

    def _note(self, exc: BaseException, stop: bool = False) -> None:
        if self.damage.first_error is None:
            self.damage.first_error = _reason(exc)
        if stop:
            self.damage.stopped_early = True
        else:
            self.damage.skipped_packets += 1

    def first_rotation(self, timeout: float = 30.0) -> int:
        """The display rotation (degrees, counter-clockwise) of the first frame, once it is decoded."""
        self._first.wait(timeout)
        return self.rotation

    def __iter__(self):
        while True:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if item is None:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def problem(self) -> str | None:
        """Why the file did not decode cleanly (None when it did), once iteration has ended."""
        expected = self.info.frames if self.limit is None else min(self.info.frames, self.limit)
        if self.decoded == 0:
            return self.damage.describe(0, expected) or "no frame could be decoded"
        return self.damage.describe(self.decoded, expected)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)

    def __enter__(self) -> "FrameReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
