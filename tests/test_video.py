"""`segdeploy predict` on video: frames equal single-image predictions, outputs keep count, rate,
audio, alpha and rotation, smoothing halves flicker, damaged clips are named, reruns skip, Ctrl-C
leaves nothing under the final name."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av")

from segdeploy.cli.main import main  # noqa: E402
from segdeploy.engine.video_synth import ClipSpec, make_clip  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")
ORT = ("--backend", "onnxruntime")


def run_cli(*argv):
    return main([str(a) for a in argv])


def decoded_frames(path, fmt="gray"):
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format=fmt) for frame in container.decode(video=0)]


def stream_types(path):
    with av.open(str(path)) as container:
        return {s.type: s.codec_context.name for s in container.streams}


def rate_of(path):
    with av.open(str(path)) as container:
        return container.streams.video[0].average_rate


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The acceptance clip: a disc moving over a gradient, 3 s at 25 fps, with an AAC tone."""
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", ClipSpec(width=160, height=120), seconds=3.0, fps=25)


def test_mask_video_frames_equal_png_predictions_and_bgcolor_keeps_audio(clip, tmp_path, capsys):
    out = tmp_path / "out"
    summary = tmp_path / "summary.json"
    assert run_cli("predict", "u2netp", clip, "-o", out, *ORT, "--bgcolor", "0,128,255", "--quiet",
                   "--json", summary) == 0
    masks = decoded_frames(out / "clip.mkv")
    assert len(masks) == 75 and rate_of(out / "clip.mkv") == 25
    assert stream_types(out / "clip.mkv") == {"video": "ffv1", "audio": "aac"}
    # the same frames, exported as PNG files, through the image path
    frames = tmp_path / "frames"
    frames.mkdir()
    for index, rgb in enumerate(decoded_frames(clip, "rgb24")):
        Image.fromarray(rgb).save(frames / f"{index:03d}.png")
    assert run_cli("predict", "u2netp", frames, "-o", tmp_path / "png_masks", *ORT, "--quiet") == 0
    for index, mask in enumerate(masks):
        expected = np.asarray(Image.open(tmp_path / "png_masks" / f"{index:03d}.png"))
        assert mask.shape == expected.shape and mask.tobytes() == expected.tobytes(), f"frame {index}"
    composite = out / "clip_cutout.mp4"
    assert stream_types(composite) == {"video": "h264", "audio": "aac"}
    assert len(decoded_frames(composite)) == 75 and rate_of(composite) == 25
    record = json.loads(summary.read_text())
    assert record["frames"] == 75 and record["flicker"] > 0 and record["clips"][0]["rate"] == 25
    # a rerun skips the finished clip and leaves its files alone
    before = (out / "clip.mkv").stat().st_mtime_ns
    assert run_cli("predict", "u2netp", clip, "-o", out, *ORT, "--bgcolor", "0,128,255", "--quiet",
                   "--json", summary) == 0
    assert json.loads(summary.read_text())["skipped"] == 1 and (out / "clip.mkv").stat().st_mtime_ns == before
    # other video options on the same folder are refused, naming the difference
    assert run_cli("predict", "u2netp", clip, "-o", out, *ORT, "--bgcolor", "0,128,255", "--smooth", "3",
                   "--quiet") == 2
    assert "smooth: 1 (in the folder) → 3 (this run)" in capsys.readouterr().err


@pytest.fixture(scope="module")
def session():
    import segdeploy

    with segdeploy.Session("u2netp", backend="onnxruntime") as opened:
        yield opened


@pytest.mark.parametrize("suffix,pix_fmt,decoder", [(".mov", "yuva444p12le", None),
                                                     (".webm", "yuva420p", "libvpx-vp9")])
def test_cutout_video_has_alpha_and_rotation_is_kept(session, tmp_path, suffix, pix_fmt, decoder):
    from segdeploy.jobs.video import VideoOptions
    from segdeploy.jobs.video_job import predict_video_file

    source = make_clip(tmp_path / "turned.mp4", ClipSpec(width=96, height=64, rotation=90), seconds=0.24)
    target = tmp_path / f"cut{suffix}"
    clip = predict_video_file(session.spec, str(source), str(target), session.runtime, VideoOptions(cutout=True))
    assert clip.frames == 6 and target.exists()
    with av.open(str(target)) as container:
        stream = container.streams.video[0]
        codec = av.CodecContext.create(decoder, "r") if decoder else stream.codec_context  # FFmpeg's own VP9 drops alpha
        frames = [f for packet in container.demux(stream) for f in codec.decode(packet)]
    assert len(frames) == 6 and frames[0].format.name == pix_fmt
    with av.open(str(target)) as container:
        assert next(container.decode(video=0)).rotation == 90  # the source's display matrix
    alpha = frames[3].to_ndarray(format="rgba")[..., 3]
    assert alpha.min() < 64 and alpha.max() > 192  # subject kept, background transparent


def test_smoothing_halves_flicker_on_a_static_noisy_clip(session, tmp_path):
    from segdeploy.jobs.video import FlickerMeter

    source = make_clip(tmp_path / "still.mp4", ClipSpec(width=160, height=120, static=True, noise=14.0),
                       seconds=1.0, audio=False)
    plain = [mask for _, mask in session.video(source)]
    smooth = [mask for index, mask in session.video(source, smooth=5)]
    assert len(plain) == len(smooth) == 25

    def flicker(masks):
        meter = FlickerMeter()
        for mask in masks:
            meter.update(mask)
        return meter.value

    assert flicker(smooth) <= flicker(plain) / 2, (flicker(plain), flicker(smooth))
    ious = [np.count_nonzero((a >= 128) & (b >= 128)) / max(1, np.count_nonzero((a >= 128) | (b >= 128)))
            for a, b in zip(plain, smooth)]
    assert min(ious) >= 0.98, ious


def _truncated_mkv(path: Path) -> Path:
    whole = make_clip(path.with_name("whole.mkv"), ClipSpec(width=96, height=64), seconds=1.0, audio=False)
    data = whole.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.5)])
    whole.unlink()
    return path


def test_damaged_clips_are_named_and_the_others_go_on(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    make_clip(folder / "good.mp4", ClipSpec(width=96, height=64), seconds=0.2)
    (folder / "garbage.mp4").write_bytes(os.urandom(3000))
    _truncated_mkv(folder / "cut.mkv")
    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(folder / "photo.png")
    gif = [Image.fromarray(np.full((30, 40, 3), v, np.uint8)) for v in (40, 200, 90)]
    gif[0].save(folder / "anim.gif", save_all=True, append_images=gif[1:], duration=100)
    out = tmp_path / "out"
    summary = tmp_path / "s.json"
    assert run_cli("predict", "u2netp", folder, "-o", out, *ORT, "--quiet", "--json", summary) == 1
    err = capsys.readouterr().err
    record = json.loads(summary.read_text())
    assert [f["path"] for f in record["failed"]] == [str(folder / "garbage.mp4")] and "refused whole" in err
    damaged = record["damaged"]
    assert [d["path"] for d in damaged] == [str(folder / "cut.mkv")] and "truncated" in damaged[0]["reason"]
    assert "decodable frame(s) were kept" in damaged[0]["reason"] and "cut.mkv" in err
    kept = decoded_frames(out / "cut.mkv")
    assert 0 < len(kept) < 25
    assert len(decoded_frames(out / "good.mkv")) == 5 and len(decoded_frames(out / "anim.mkv")) == 3
    assert (out / "photo.png").exists() and record["images"]["written"] == 1
    assert not (out / "garbage.mkv").exists()
    # refuse: the damaged clip is refused whole, nothing under its name
    out2 = tmp_path / "out2"
    assert run_cli("predict", "u2netp", folder / "cut.mkv", "-o", out2, *ORT, "--quiet",
                   "--damaged-video", "refuse", "--json", summary) == 1
    assert "refused whole (--damaged-video refuse)" in json.loads(summary.read_text())["failed"][0]["reason"]
    assert not (out2 / "cut.mkv").exists() and not [p for p in out2.iterdir() if p.name.endswith(".partial")]


def test_without_pyav_video_is_a_one_line_usage_error(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", ClipSpec(width=32, height=32), seconds=0.12, audio=False)
    code = ("import sys; sys.modules['av'] = None\n"
            "from segdeploy.cli.main import build_parser, main\n"
            "build_parser(); assert 'av' not in sys.modules or sys.modules['av'] is None\n"
            f"sys.exit(main(['predict', 'u2netp', {str(clip)!r}, '-o', {str(tmp_path / 'o')!r}, '--quiet']))")
    done = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=SRC), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "pip install 'segdeploy[video]'" in done.stderr and "Traceback" not in done.stderr
    help_only = subprocess.run([sys.executable, "-c", "import sys; from segdeploy.cli.main import build_parser; "
                                "build_parser(); print('av' in sys.modules)"],
                               env=dict(os.environ, PYTHONPATH=SRC), capture_output=True, text=True, timeout=120)
    assert help_only.stdout.strip() == "False"


@pytest.mark.slow
def test_ctrl_c_stops_within_2_s_leaves_nothing_and_rerun_completes(tmp_path):
    clip = make_clip(tmp_path / "long.mp4", ClipSpec(width=320, height=240), seconds=6.0)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "segdeploy.cli.main", "predict", "u2netp", str(clip), "-o", str(out),
            "--backend", "onnxruntime", "--quiet"]
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600  # start-up on a busy machine
    while not (out.exists() and any(p.name.endswith(".partial") for p in out.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, "no clip being written"
        time.sleep(0.05)
    time.sleep(1.0)  # some frames encoded
    assert proc.poll() is None, "finished before the interrupt: the test needs a longer clip"
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    code = proc.wait(timeout=60)
    elapsed = time.monotonic() - sent
    assert code == 130, rest
    assert elapsed < 2.0, f"took {elapsed:.1f} s to stop"
    assert not (out / "long.mkv").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")]
    assert subprocess.run(argv, env=env, capture_output=True, timeout=600).returncode == 0
    assert len(decoded_frames(out / "long.mkv")) == 150


def test_smoother_is_a_causal_mean_and_flicker_is_the_mean_absolute_change():
    from segdeploy import get_spec
    from segdeploy.jobs.video import FlickerMeter, TemporalSmoother
    from segdeploy.tasks import Prediction

    smoother = TemporalSmoother(2, get_spec("u2netp"))
    maps = [np.full((2, 2), v, np.float32) for v in (0.0, 1.0, 0.5)]
    out = [smoother.push(Prediction(map=m, mask=(m * 255).astype(np.uint8))) for m in maps]
    assert [float(o.map[0, 0]) for o in out] == [0.0, 0.5, 0.75]  # frame t: mean of t-1 and t only
    assert [int(o.mask[0, 0]) for o in out] == [0, 128, 191]  # the saliency map's 8-bit rounding
    meter = FlickerMeter()
    for value in (0, 255, 255, 0):
        meter.update(np.full((3, 3), value, np.uint8))
    assert meter.value == pytest.approx(2 / 3)  # changes 1, 0, 1 over three pairs
