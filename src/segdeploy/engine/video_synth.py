"""Synthetic clips for tests, benchmarks and demos: a disc moving over a colour gradient (or
standing still, with fresh noise on every frame), with a sine tone as the audio track.

Frames are generated one at a time, so a 60-s 1080p clip never sits in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from segdeploy.engine.video import require_av


def synthetic_frame(index: int, frames: int, width: int, height: int, *, static: bool = False,
                    noise: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """HxWx3 uint8: a diagonal gradient with a bright disc (moving left to right unless ``static``)."""
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    image = np.empty((height, width, 3), dtype=np.float32)
    image[..., 0] = 40 + 120 * xs
    image[..., 1] = 60 + 100 * ys
    image[..., 2] = 150 - 80 * (xs + ys) / 2
    progress = 0.5 if static else index / max(1, frames - 1)
    cx, cy = width * (0.2 + 0.6 * progress), height * 0.5
    radius = min(width, height) * 0.22
    disc = (xs * (width - 1) - cx) ** 2 + (ys * (height - 1) - cy) ** 2 <= radius ** 2
    image[disc] = (235, 200, 60)
    if noise > 0:
        rng = rng if rng is not None else np.random.default_rng(index)
        image += rng.normal(0.0, noise, size=image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class ClipSpec:
    """What the frames of a synthetic clip show.

    Attributes:
        width: frame width in pixels.
        height: frame height in pixels.
        static: the disc stands still in the middle instead of moving left to right; with ``noise``,
            every change between frames is noise (the clip flicker is measured on).
        noise: standard deviation of the Gaussian noise added to every pixel, drawn anew for each frame.
        rotation: display rotation (degrees, counter-clockwise) a player applies, as phones record:
            only the container's display matrix carries it, the stored frames are not rotated.
    """

    width: int = 320
    height: int = 240
    static: bool = False
    noise: float = 0.0
    rotation: int = 0


def make_clip(path, picture: ClipSpec | None = None, *, seconds: float = 3.0, fps: int = 25, audio: bool = True,
              crf: int = 18, seed: int = 0) -> Path:
    """Write a synthetic H.264 clip (MP4/MOV/MKV by suffix) with an optional AAC sine tone; returns ``path``.

    Args:
        path: destination file; its suffix picks the container.
        picture: what the frames show (None = :class:`ClipSpec`'s defaults, a 320x240 moving disc).
        seconds: duration; ``round(seconds * fps)`` frames are written.
        fps: frame rate.
        audio: add a 440 Hz AAC sine tone.
        crf: x264 quality (lower is better; 18 is close to visually lossless).
        seed: seed of the per-frame noise.
    """
    picture = picture if picture is not None else ClipSpec()
    width, height = picture.width, picture.height
    av = require_av()
    path = Path(path)
    frames = int(round(seconds * fps))
    rng = np.random.default_rng(seed)
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "crf": str(crf)}
        if picture.rotation:
            video.set_display_rotation(picture.rotation)
        tone = None
        if audio:
            tone = container.add_stream("aac", rate=44100)
            tone.layout = "mono"
        samples_per_frame = Fraction(44100, fps)
        sent = 0
        for index in range(frames):
            pixels = synthetic_frame(index, frames, width, height, static=picture.static, noise=picture.noise,
                                     rng=rng)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            for packet in video.encode(frame):
                container.mux(packet)
            if tone is not None:
                until = int((index + 1) * samples_per_frame)
                t = np.arange(sent, until, dtype=np.float32) / 44100.0
                wave = (0.2 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)[None, :]
                chunk = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 44100, sent
                for packet in tone.encode(chunk):
                    container.mux(packet)
                sent = until
        for stream in (video, tone):
            if stream is not None:
                for packet in stream.encode():
                    container.mux(packet)
    return path
