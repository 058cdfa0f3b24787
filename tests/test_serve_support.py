"""Helpers of the serve tests (no tests here).

Tests serve ``u2netp-test64``: U²-Netp with a 64x64 input instead of 320x320 (25x fewer
operations), registered by a real plugin distribution (a ``*.dist-info`` with a
``segdeploy.models`` entry point) written to a temporary folder, so that a server started as a
subprocess finds it the way a user's plugin is found.
"""

from __future__ import annotations

import io
import os
import socket
import sys
import threading
from pathlib import Path

import numpy as np

MODEL = "u2netp-test64"
ROOT = Path(__file__).resolve().parents[1]

_PLUGIN = '''
import dataclasses


def register():
    from segdeploy.core.registry import get_spec, register_model

    base = get_spec("u2netp")
    register_model(dataclasses.replace(base, name="u2netp-test64", title="U2-Netp at 64x64 (serve tests)",
                                       preprocess=dataclasses.replace(base.preprocess, size=(64, 64)),
                                       input_size=(64, 64)), replace=True)
'''


def write_plugin(folder: Path) -> Path:
    """Write the plugin module and its dist-info into ``folder``; return ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "segdeploy_serve_testplugin.py").write_text(_PLUGIN)
    info = folder / "segdeploy_serve_testplugin-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: segdeploy-serve-testplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[segdeploy.models]\nu2netp-test64 = segdeploy_serve_testplugin:register\n")
    return folder


def register_in_process(folder: Path) -> None:
    """Register the test model in this process (the entry point is only read at first use)."""
    sys.path.insert(0, str(folder))
    import importlib

    importlib.import_module("segdeploy_serve_testplugin").register()


def subprocess_env(folder: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(folder)])
    env.pop(  # a key from the developer's shell would change the auth tests
        "SEGDEPLOY_API_KEY", None)
    return env


def photo(seed: int, height: int = 40, width: int = 56, fmt: str = "JPEG") -> bytes:
    """A small deterministic image file: a textured ellipse on a gradient."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1),
                     np.full_like(xx, rng.integers(0, 255))], axis=-1).astype(np.float64)
    inside = ((yy - height / 2) / (height / 3)) ** 2 + ((xx - width / 2) / (width / 4)) ** 2 <= 1
    base[inside] = rng.uniform(0, 255, 3) + rng.normal(0, 10, (int(inside.sum()), 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(proc, base: str, log, seconds: float = 600) -> None:
    """Poll ``base``/readyz until it answers 200; fail with the server's log if it exits first."""
    import time

    import httpx

    deadline = time.monotonic() + seconds  # a busy shared 2-core machine can take minutes to import torch
    while True:
        assert proc.poll() is None, log.seek(0) or log.read()
        try:
            if httpx.get(base + "/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "server never became ready"
        time.sleep(0.5)


class ControlledRuntime:
    """A real runtime behind a switch: ``hold()`` makes forward passes wait until ``release()``
    (to pile requests up deterministically), and ``poison`` makes any batch holding a constant
    input fail (to check that the other items of that batch still get their answer)."""

    def __init__(self, runtime):
        self.inner = runtime
        self.name = runtime.name
        self.precision = runtime.precision
        self.spec = runtime.spec
        self.selection = getattr(runtime, "selection", None)
        self.model = getattr(runtime, "model", None)
        self.poison = False
        self.batches: list[int] = []
        self._open = threading.Event()
        self._open.set()
        self.entered = threading.Event()

    def hold(self) -> None:
        self._open.clear()
        self.entered.clear()

    def release(self) -> None:
        self._open.set()

    def run(self, batch):
        self.entered.set()
        self._open.wait(120)
        if self.poison and any(float(np.ptp(item.reshape(item.shape[0], -1), axis=1).max()) == 0.0 for item in batch):
            raise RuntimeError("poisoned input (test fault)")
        self.batches.append(len(batch))
        return self.inner.run(batch)

    def warmup(self, shape, iterations: int = 2) -> None:
        self.inner.warmup(shape, iterations)

    def describe(self):
        return self.inner.describe()
