"""One run owns an output folder at a time (issue 23 item 7): a second run with other settings is
refused while the first holds the folder, one with the same settings waits for it and resumes, a
lock left by a dead process is taken over; and a folder says which files it skips (item 12)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segdeploy.core.errors import UsageError
from segdeploy.core.registry import get_spec
from segdeploy.jobs.folder_lock import LOCK_NAME
from segdeploy.jobs.options import PredictOptions
from segdeploy.jobs.plan import plan_predict_job

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 50 * i, np.uint8)).save(folder / f"{i}.png")
    return folder


def _plan(photos, out, seed=0, log=None):
    options = PredictOptions.of(weights="random", seed=seed, backend="torch")
    return plan_predict_job(get_spec("u2netp"), [str(photos)], out, options, log=log)


def test_a_run_with_other_settings_is_refused_while_the_folder_is_held(photos, tmp_path):
    out = tmp_path / "out"
    first = _plan(photos, out, seed=0)
    with pytest.raises(UsageError, match=r"another segdeploy run \(pid \d+"):
        _plan(photos, out, seed=1)
    first.release()
    _plan(photos, out, seed=1).release()  # free again: the manifest check now decides


def test_a_seed_1_run_on_a_seed_0_folder_is_refused_and_nothing_mixes(photos, tmp_path):
    out = tmp_path / "out"
    plan = _plan(photos, out, seed=0)
    plan.begin({"backend": "torch", "precision": "fp32", "device": "cpu"})
    plan.record(plan.todo[0][0], plan.todo[0][2])
    plan.release()
    manifest = json.loads((out / ".segdeploy-manifest.json").read_text())
    assert manifest["settings"]["weights"] == {"kind": "random", "seed": 0}  # the seed is a recorded setting
    with pytest.raises(UsageError, match="other settings"):
        _plan(photos, out, seed=1)


def test_the_same_settings_wait_for_the_holder_then_resume(photos, tmp_path):
    out = tmp_path / "out"
    first = _plan(photos, out)
    first.begin({"backend": "torch", "precision": "fp32", "device": "cpu"})
    messages: list[str] = []

    def finish_first():
        time.sleep(1.0)
        for source, target, key in first.todo:
            target.write_bytes(b"mask")
            first.record(source, key)
        first.release()

    threading.Thread(target=finish_first).start()
    started = time.monotonic()
    second = _plan(photos, out, log=messages.append)
    assert time.monotonic() - started >= 0.9  # it waited for the holder
    assert any("waiting for the run with the same settings" in m for m in messages)
    assert second.todo == [] and second.summary.skipped == 3  # and resumed from its manifest
    second.release()


def test_a_stale_lock_of_a_dead_process_is_taken_over(photos, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    (out / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "settings": {}}))
    messages: list[str] = []
    plan = _plan(photos, out, seed=5, log=messages.append)
    assert any(f"left by pid {dead.pid}" in m for m in messages), messages
    plan.release()


def test_a_killed_holder_frees_the_folder(photos, tmp_path):
    """The lock is a flock: the kernel drops it when its process dies, even by SIGKILL."""
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom segdeploy.core.registry import get_spec\n"
         "from segdeploy.jobs.options import PredictOptions\nfrom segdeploy.jobs.plan import plan_predict_job\n"
         f"p = plan_predict_job(get_spec('u2netp'), [{str(photos)!r}], {str(out)!r},"
         " PredictOptions.of(weights='random', seed=9))\n"
         "print('held', flush=True)\ntime.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True, env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"})
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UsageError, match="another segdeploy run"):
        _plan(photos, out, seed=0)
    holder.kill()
    holder.wait()
    _plan(photos, out, seed=0).release()


def test_a_folder_made_only_for_the_lock_goes_when_nothing_was_written(photos, tmp_path):
    out = tmp_path / "new"
    plan = _plan(photos, out)
    assert (out / LOCK_NAME).exists()
    plan.lock.release(nothing_written=True)
    assert not out.exists()


def test_a_gif_in_a_folder_is_named_not_skipped_silently(photos, tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(photos / "anim.gif")
    messages: list[str] = []
    plan = _plan(photos, tmp_path / "out", log=messages.append)
    lines = [m for m in messages if "anim.gif" in m]
    assert len(lines) == 1 and lines[0].startswith("skipped ") and "GIF" in lines[0]
    assert lines[0] in plan.summary.warnings
    plan.release()


def test_the_ray_summary_mentions_a_lost_worker():
    from segdeploy.cli.engine import ray_note

    ray = {"workers": 2, "cpus_per_worker": 1.0, "gpus_per_worker": None, "nodes": 1, "address": "local",
           "startup_s": 3.0, "stray_temporaries_removed": 1, "workers_lost": 1}
    assert "1 worker(s) lost and replaced" in ray_note({"ray": ray})
    assert "lost" not in ray_note({"ray": {**ray, "stray_temporaries_removed": 0, "workers_lost": 0}})
