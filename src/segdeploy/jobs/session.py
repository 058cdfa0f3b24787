"""A warm model: :class:`Session` opens the runtime once and predicts or cuts out on every call.

Inputs may be a path (``str`` or ``os.PathLike``; never iterated character by character), the bytes
of an encoded image, a PIL image, an HxWx3 / HxW numpy array, or a list / tuple / generator of
those. A single input gives a single result; a collection gives a list in the same order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from segdeploy.core.errors import UsageError
from segdeploy.core.registry import get_spec
from segdeploy.core.specs import ModelSpec
from segdeploy.engine.images import DEFAULT_MAX_PIXELS, load_image, read_image
from segdeploy.engine.pipeline import StreamOptions, stream_predictions
from segdeploy.engine.transforms import InputPolicy
from segdeploy.jobs.options import RuntimeRequest
from segdeploy.tasks import get_task


def open_model_runtime(model, request: RuntimeRequest):
    """A runtime for ``model`` (a registry name, a ModelSpec, or an nn.Module built by create_model):
    the one place jobs open a model, so that a test can stand in for every opening."""
    return request.open(model)


def spec_of(model) -> ModelSpec:
    """The spec of a registry name, a ModelSpec, or a module made by ``create_model``."""
    if isinstance(model, (str, ModelSpec)):
        return get_spec(model)
    spec = getattr(model, "segdeploy_spec", None) or getattr(model, "spec", None)
    if spec is None:
        raise TypeError("model must be a registry name, a ModelSpec, a module from create_model, or a Runtime")
    return spec


def _is_single(images) -> bool:
    from PIL import Image

    if isinstance(images, (str, bytes, bytearray, os.PathLike, Image.Image)):
        return True
    return isinstance(images, np.ndarray) and images.ndim in (2, 3)


def as_items(images) -> tuple[list, bool]:
    """(list of inputs, whether one input was given)."""
    if _is_single(images):
        return [images], True
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images), False
    try:
        return list(images), False
    except TypeError:
        raise UsageError(f"cannot predict {type(images).__name__}: give a path, a PIL image, a numpy array or a "
                         "list of them") from None


def to_rgb_array(image) -> np.ndarray:
    """A PIL image or a numpy array as HxWx3 uint8 RGB (gray expanded, alpha dropped)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        image = image.convert("RGB") if image.mode != "RGB" else image
        return np.array(image, dtype=np.uint8)
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise UsageError(f"expected an HxWx3 RGB image, got an array of shape {array.shape}")
    if array.dtype != np.uint8:
        raise UsageError(f"expected a uint8 image (0..255), got {array.dtype}; convert it first "
                         "(e.g. (x * 255).round().astype(np.uint8) for a [0, 1] float image)")
    return np.ascontiguousarray(array[:, :, :3])


class Session:
    """One model kept warm across calls.

    Args:
        model: registry name, ModelSpec, or a module from :func:`segdeploy.create_model`.
        weights: checkpoint path, packaged variant name, or "random" (None: the model's default).
        backend, device, precision: as :func:`segdeploy.open_runtime` ("auto" picks and says why).
        batch_size: images per forward pass.
        max_size: longest side for native-resolution models ("spec" = the model's default,
            0/None = no limit).
        runtime: an already opened runtime to use instead.
        runtime_settings: the rest of :class:`~segdeploy.jobs.options.RuntimeRequest` (onnx_path,
            calib, seed) and backend options (threads, mode, ...).

    Example::

        with segdeploy.Session("u2netp") as session:
            mask = session.predict("photo.jpg")          # HxW uint8
            rgba = session.cutout(pil_image, background=(255, 255, 255))
    """

    def __init__(self, model, weights=None, backend: str = "auto", *, device: str = "cpu",
                 precision: str | None = None, batch_size: int = 1, max_size: int | None | str = "spec",
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, runtime=None, **runtime_settings: Any):
        self.spec = spec_of(model)
        self.batch_size = batch_size
        self.max_size = max_size
        self.max_pixels = max_pixels
        self.policy = InputPolicy.for_model(self.spec, max_size)
        if runtime is None:
            request = RuntimeRequest.of(weights=weights, backend=backend, device=device, precision=precision,
                                        **runtime_settings)
            runtime = open_model_runtime(model, request)
        self.runtime = runtime

    def describe(self) -> dict[str, Any] | None:
        return self.runtime.describe() if hasattr(self.runtime, "describe") else None

    def _read(self, item):
        if isinstance(item, (str, bytes, bytearray, os.PathLike)):
            source = bytes(item) if isinstance(item, (bytes, bytearray)) else item
            return load_image(source, self.policy, max_pixels=self.max_pixels)
        return to_rgb_array(item)

    def _run(self, images):
        items, single = as_items(images)
        results = []
        stream = StreamOptions(batch_size=self.batch_size, max_side=self.max_size, workers=min(4, max(1, len(items))))
        for outcome in stream_predictions(items, self._read, self.runtime, self.spec, stream):
            if not outcome.ok:
                raise outcome.error
            results.append((outcome.item, outcome.prediction))
        return results, single

    def predict(self, images, *, return_maps: bool = False):
        """Masks (uint8 HxW at the original size) or, with ``return_maps``, Predictions (map + mask).

        Raises:
            ImageReadError: a path could not be read (the message names it).
        """
        results, single = self._run(images)
        out = [pred if return_maps else pred.mask for _, pred in results]
        return out[0] if single else out

    def cutout(self, images, background: tuple[int, ...] | None = None):
        """RGBA uint8 cut-outs at the original size: the image with the mask as alpha, or composited
        onto ``background`` (R, G, B[, A])."""
        results, single = self._run(images)
        task = get_task(self.spec)
        out = []
        for item, pred in results:
            if isinstance(item, (str, bytes, bytearray, os.PathLike)):
                source = bytes(item) if isinstance(item, (bytes, bytearray)) else Path(item)
                original = read_image(source, max_pixels=self.max_pixels)
            else:
                original = to_rgb_array(item)
            out.append(task.cutout(original, pred, background))
        return out[0] if single else out

    def video(self, path, *, smooth: int = 1, max_frames: int | None = None):
        """Yield ``(frame index, mask)`` for every frame of a video file, streamed through the same
        pipeline as :meth:`predict` (needs ``pip install 'segdeploy[video]'``). ``smooth``: causal
        moving average of the probability maps over that many frames (1 = off).

        Raises:
            ImageReadError: the file is not a readable video (the message names it).
        """
        from segdeploy.jobs.video import video_masks

        yield from video_masks(self.runtime, self.spec, path, batch_size=self.batch_size, smooth=smooth,
                               max_frames=max_frames)

    def close(self) -> None:
        close = getattr(self.runtime, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        info = self.describe() or {}
        return f"<segdeploy.Session {self.spec.name} {info.get('backend', '?')} {info.get('precision', '')}>"
