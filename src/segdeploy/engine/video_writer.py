"""Writing mask, cut-out and composited videos (PyAV), atomically, with the source's audio and rotation.

Each writer encodes in its own thread from a small bounded queue, so encoding overlaps inference
and memory stays bounded. The file is written under a hidden temporary name in the target folder
and renamed when complete: an interrupted run leaves nothing under the final name.

Formats (``KINDS``):

* ``ffv1``: the mask, lossless (FFV1, gray 8-bit, Matroska): every decoded frame equals the PNG mask
  of that frame byte for byte.
* ``h264-mask``: a small preview of the mask (H.264).
* ``vp9-alpha``: the cut-out with alpha (VP9 ``yuva420p`` in WebM).
* ``prores-alpha``: the cut-out with alpha (ProRes 4444 in MOV).
* ``h264-rgb``: the subject composited onto a colour (H.264 MP4).
* ``frames``: a folder of PNG masks (``000000.png`` ...), renamed into place at the end.

The source's audio stream is copied packet by packet (not re-encoded), interleaved with the video
as it is written; a container that cannot hold that codec (WebM takes Opus and Vorbis only) keeps
no audio, and :attr:`VideoWriter.note` says so.
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from segdeploy.engine.video import require_av
from segdeploy.engine.writers import NEW_FILE_MODE, encode_png, track_partial, untrack_partial


@dataclass(frozen=True)
class Kind:
    codec: str
    container: str
    pix_fmt: str
    source_format: str  # the numpy layout handed in: gray, rgb24 or rgba
    options: tuple[tuple[str, str], ...] = ()
    audio: tuple[str, ...] | None = None  # audio codecs the container can take (None: any)


_H264 = (("preset", "veryfast"), ("crf", "18"))
_MP4_AUDIO = ("aac", "mp3", "ac3", "eac3", "alac", "flac", "opus")
KINDS = {
    "ffv1": Kind("ffv1", "matroska", "gray", "gray", (("level", "3"), ("slices", "4"), ("slicecrc", "1"))),
    "h264-mask": Kind("libx264", "mp4", "yuv420p", "gray", _H264, _MP4_AUDIO),
    "h264-mask-mkv": Kind("libx264", "matroska", "yuv420p", "gray", _H264),
    "vp9-alpha": Kind("libvpx-vp9", "webm", "yuva420p", "rgba",
                      (("deadline", "realtime"), ("cpu-used", "8"), ("row-mt", "1"), ("crf", "30"), ("b", "0")),
                      ("opus", "vorbis")),
    "prores-alpha": Kind("prores_ks", "mov", "yuva444p10le", "rgba", (("profile", "4444"), ("alpha_bits", "16")),
                         ("aac", "alac", "mp3", "pcm_s16le", "pcm_s24le", "pcm_f32le")),
    "h264-rgb": Kind("libx264", "mp4", "yuv420p", "rgb24", _H264, _MP4_AUDIO),
}


class _AudioCopy:
    """The source's first audio stream, muxed packet by packet up to a time."""

    def __init__(self, av, source, output):
        self.input = av.open(str(source), mode="r")
        stream = self.input.streams.audio[0]
        self.out_stream = output.add_stream_from_template(stream)
        self.time_base = stream.time_base
        self.packets = self.input.demux(stream)
        self.pending = None
        self.output = output

    def until(self, seconds: float | None) -> None:
        """Mux every packet that starts before ``seconds`` (None: all that are left)."""
        while True:
            packet = self.pending
            if packet is None:
                try:
                    packet = next(self.packets)
                except (StopIteration, Exception):  # noqa: BLE001 - a broken audio tail ends the copy
                    self.packets = iter(())
                    return
            if packet.dts is None:  # the demuxer's empty flush packet
                self.pending = None
                continue
            if seconds is not None and packet.pts is not None and float(packet.pts * self.time_base) > seconds:
                self.pending = packet
                return
            self.pending = None
            packet.stream = self.out_stream
            self.output.mux(packet)

    def close(self) -> None:
        self.input.close()


class VideoWriter:
    """Encode frames into ``target`` (renamed into place by :meth:`finish`).

    Args:
        target: the final file (or folder, for ``frames``).
        kind: a key of :data:`KINDS` or ``"frames"``.
        rate, time_base: the source stream's frame rate and time base (timestamps are kept).
        rotation: display rotation (degrees, counter-clockwise) written to the output.
        audio_from: the source file whose audio is copied (None: no audio).
    """

    def __init__(self, target, kind: str, *, rate: Fraction, time_base: Fraction, rotation: int = 0,
                 audio_from=None, audio_codec: str | None = None, queue_frames: int = 8):
        self.target = Path(target)
        self.kind = kind
        self.rate, self.time_base, self.rotation = Fraction(rate), Fraction(time_base), rotation
        self.note: str | None = None
        self.frames = 0
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue = queue.Queue(maxsize=queue_frames)
        self._error: BaseException | None = None
        self._aborted = threading.Event()
        self._last_pts: int | None = None
        if kind == "frames":
            self.temp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", suffix=".partial", dir=self.target.parent))
            self.container = None
        else:
            self._open_container(audio_from, audio_codec)
        track_partial(self.temp)
        self._thread = threading.Thread(target=self._work, name="segdeploy-video-write", daemon=True)
        self._thread.start()

    def _open_container(self, audio_from, audio_codec) -> None:
        av = require_av()
        spec = KINDS[self.kind]
        fd, name = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".partial", dir=self.target.parent)
        os.close(fd)
        self.temp = Path(name)
        self.container = av.open(name, mode="w", format=spec.container)
        self.stream = None
        self.audio = None
        self._audio_from = None
        if audio_from is not None and audio_codec is not None:
            if spec.audio is not None and audio_codec not in spec.audio:
                self.note = (f"the source's {audio_codec} audio cannot be copied into {spec.container.upper()} "
                             f"(it takes {', '.join(spec.audio)}); this output has no sound")
            else:
                self._audio_from = audio_from  # its stream is added after the video's (stream 0 = video)

    def _video_stream(self, height: int, width: int):
        spec = KINDS[self.kind]
        stream = self.container.add_stream(spec.codec, rate=self.rate)
        stream.width, stream.height = width, height
        pix_fmt = spec.pix_fmt
        if pix_fmt == "yuv420p" and (width % 2 or height % 2):
            pix_fmt = "yuv444p"  # 4:2:0 needs even sides; 4:4:4 keeps the exact size
        stream.pix_fmt = pix_fmt
        stream.codec_context.time_base = self.time_base
        stream.time_base = self.time_base
        stream.codec_context.thread_count = 0
        stream.options = dict(spec.options)
        if self.rotation:
            stream.set_display_rotation(self.rotation)
        if self._audio_from is not None:
            self.audio = _AudioCopy(require_av(), self._audio_from, self.container)
        return stream

    def write(self, pts: int | None, array: np.ndarray) -> None:
        """Queue one frame (gray HxW for masks, HxWx4 for cut-outs, HxWx3 for composites)."""
        while True:
            if self._error is not None:
                raise self._error
            try:
                self._queue.put((pts, array), timeout=0.1)
                return
            except queue.Full:
                continue

    def _work(self) -> None:
        try:
            while not self._aborted.is_set():
                item = self._queue.get()
                if item is None:
                    if not self._aborted.is_set():
                        self._flush()
                    return
                self._encode(*item)
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread by write/finish
            self._error = exc

    def _encode(self, pts: int | None, array: np.ndarray) -> None:
        if self.container is None:
            (self.temp / f"{self.frames:06d}.png").write_bytes(encode_png(array))
            self.frames += 1
            return
        av = require_av()
        if self.stream is None:
            self.stream = self._video_stream(*array.shape[:2])
        if pts is None:
            pts = int(round(self.frames / self.rate / self.time_base))
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # encoders refuse repeated timestamps (damaged sources have them)
        self._last_pts = pts
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=KINDS[self.kind].source_format)
        frame.pts, frame.time_base = pts, self.time_base
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1
        if self.audio is not None:
            self.audio.until(float(pts * self.time_base) + 0.5)

    def _flush(self) -> None:
        if self.container is None:
            return
        if self.stream is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
        if self.audio is not None:
            self.audio.until(None)
        self._close_inputs()
        self.container.close()

    def _close_inputs(self) -> None:
        if self.audio is not None:
            self.audio.close()
            self.audio = None

    def finish(self) -> Path:
        """Encode what is queued, close, and rename into place. Returns the target."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            self.abort()
            raise self._error
        if self.container is None:
            if self.target.exists():
                shutil.rmtree(self.target)
            os.chmod(self.temp, NEW_FILE_MODE | (NEW_FILE_MODE & 0o444) >> 2)  # x where r: a folder
        else:
            with open(self.temp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.chmod(self.temp, NEW_FILE_MODE)
        os.replace(self.temp, self.target)
        untrack_partial(self.temp)
        return self.target

    def abort(self) -> None:
        """Stop at once and delete the temporary file (nothing appears under the final name)."""
        self._aborted.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout=1.0)
        if self.container is not None and not self._thread.is_alive():
            try:
                self._close_inputs()
                self.container.close()
            except Exception:  # noqa: BLE001 - the file is deleted anyway
                pass
        if self.temp.is_dir():
            shutil.rmtree(self.temp, ignore_errors=True)
        else:
            try:
                os.unlink(self.temp)
            except OSError:
                pass
        untrack_partial(self.temp)
