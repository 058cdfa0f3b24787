"""Model-specific preprocessing and output decoding, driven entirely by a ModelSpec.

``preprocess`` turns an RGB uint8 image into the float32 CHW array the network was trained on;
``decode`` turns one image's raw network outputs into a map and a mask at the original size.
Each resampling convention reproduces the library the upstream code used (see ``Preprocess``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .specs import ModelSpec, get_spec

_PIL_FILTERS = {"bilinear": "BILINEAR", "bicubic": "BICUBIC", "nearest": "NEAREST"}
_CV2_FLAGS = {"bilinear": "INTER_LINEAR", "bicubic": "INTER_CUBIC", "nearest": "INTER_NEAREST"}


def target_size(spec_pre, height: int, width: int) -> tuple[int, int]:
    """The (H, W) an image of this size is resized to before it enters the network."""
    if spec_pre.size is not None:
        return tuple(spec_pre.size)
    if spec_pre.scale is not None:
        # milesial BasicDataset.preprocess: newW, newH = int(scale * w), int(scale * h) (truncation).
        new_h, new_w = int(spec_pre.scale * height), int(spec_pre.scale * width)
        if new_h < 1 or new_w < 1:
            raise ValueError(f"image of {width}x{height} is too small for scale {spec_pre.scale}")
        return new_h, new_w
    return height, width


def _linear_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-pixel bilinear sampling along one axis: source index pairs and weights.

    Source coordinate of output sample i is (i + 0.5) * n_in / n_out - 0.5. Indices outside
    [0, n_in - 1] are returned as -1 / n_in so that the caller can read them as the constant 0.
    """
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    lo = np.floor(src).astype(np.int64)
    weight = src - lo
    return lo, lo + 1, weight


def resize_skimage_constant(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize as ``skimage.transform.resize(order=1, mode='constant', cval=0,
    anti_aliasing=False)``: half-pixel sampling, samples that fall outside the image blend with 0
    (only on an axis being enlarged), result clipped to the input's [min, max].

    Args:
        image: HxWxC float array in [0, 1].
    Returns:
        float64 HxWxC array.
    """
    padded = np.zeros((image.shape[0] + 2, image.shape[1] + 2, image.shape[2]), dtype=np.float64)
    padded[1:-1, 1:-1] = image  # a ring of cval=0 so that index -1 and n read 0
    r0, r1, wr = _linear_axis(image.shape[0], height)
    c0, c1, wc = _linear_axis(image.shape[1], width)
    r0, r1 = np.clip(r0 + 1, 0, image.shape[0] + 1), np.clip(r1 + 1, 0, image.shape[0] + 1)
    c0, c1 = np.clip(c0 + 1, 0, image.shape[1] + 1), np.clip(c1 + 1, 0, image.shape[1] + 1)
    rows = padded[r0] * (1 - wr)[:, None, None] + padded[r1] * wr[:, None, None]
    out = rows[:, c0] * (1 - wc)[None, :, None] + rows[:, c1] * wc[None, :, None]
    # skimage (0.14 _warps.resize → warp(clip=True)) clips the result to the input's value range.
    return np.clip(out, image.min(), image.max())


def resize_image(image: np.ndarray, height: int, width: int, interpolation: str, library: str) -> np.ndarray:
    """Resize an HxWx3 uint8 image with the named library's convention.

    Returns uint8 for "pil" and "cv2" (they resample uint8 images), float64 in [0, 1] for "skimage"
    (skimage converts to float before resampling).
    """
    if library == "skimage":
        if interpolation != "bilinear":
            raise ValueError("the skimage convention is implemented for bilinear (order=1) only")
        return resize_skimage_constant(image.astype(np.float64) / 255.0, height, width)
    if image.shape[0] == height and image.shape[1] == width:
        return image
    if library == "pil":
        from PIL import Image

        resample = getattr(Image.Resampling, _PIL_FILTERS[interpolation])
        return np.asarray(Image.fromarray(image).resize((width, height), resample=resample))
    if library == "cv2":
        import cv2

        return cv2.resize(image, (width, height), interpolation=getattr(cv2, _CV2_FLAGS[interpolation]))
    raise ValueError(f"unknown resize library {library!r}")


def _padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def preprocess_with_valid(image: np.ndarray, spec: ModelSpec | str) -> tuple[np.ndarray, tuple[int, int]]:
    """Like :func:`preprocess`, also returning the (H, W) region that holds the image.

    When the network needs sizes divisible by ``multiple_of`` and the image is used at its native
    size, the input is zero-padded on the bottom/right; :func:`decode` crops that padding away.
    """
    spec = get_spec(spec)
    pre = spec.preprocess
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"preprocess expects an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    height, width = target_size(pre, image.shape[0], image.shape[1])
    resized = resize_image(image, height, width, pre.interpolation, pre.resize_library)
    x = resized.astype(np.float64)
    if pre.channel_order == "BGR":
        x = x[:, :, ::-1]
    if pre.scaling == "div255":
        if resized.dtype == np.uint8:
            x = x / 255.0
    elif pre.scaling == "divmax":
        # U-2-Net ToTensorLab(flag=0): image / np.max(image) over all pixels and channels.
        peak = x.max()
        x = x / peak if peak > 0 else x
    else:
        raise ValueError(f"unknown scaling {pre.scaling!r}")
    if pre.mean is not None:
        x = (x - np.asarray(pre.mean)) / np.asarray(pre.std)
    if pre.post_divide != 1.0:
        x = x / pre.post_divide
    chw = np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)
    if pre.size is None and pre.multiple_of > 1:
        ph, pw = _padded_size(height, width, pre.multiple_of)
        if (ph, pw) != (height, width):
            padded = np.zeros((3, ph, pw), dtype=np.float32)
            padded[:, :height, :width] = chw
            chw = padded
    return chw, (height, width)


def preprocess(image: np.ndarray, spec: ModelSpec | str) -> np.ndarray:
    """RGB uint8 HxWx3 image → float32 CHW network input, as the model's upstream code prepares it."""
    return preprocess_with_valid(image, spec)[0]


def preprocess_batch(images: list[np.ndarray], spec: ModelSpec | str) -> np.ndarray:
    """Stack preprocessed images into an NCHW float32 batch (all must give the same input size)."""
    arrays = [preprocess(image, spec) for image in images]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images give different input sizes {sorted(shapes)}; batch them separately")
    return np.stack(arrays)


@dataclass
class Prediction:
    """One image's decoded output at its original size.

    Attributes:
        map: float32 HxW probability / saliency in [0, 1] (saliency, binary) or CxHxW class
            probabilities (semantic).
        mask: uint8 HxW — saliency: the 0..255 map as upstream saves it; binary: 0/1;
            semantic: class ids.
    """

    map: np.ndarray
    mask: np.ndarray


def _resize_float(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear, half-pixel (F.interpolate align_corners=False, no antialias) resize of CxHxW float."""
    import cv2

    if array.shape[1:] == (height, width):
        return array
    channels = array.shape[0]
    out = np.empty((channels, height, width), dtype=np.float32)
    # cv2 handles at most 512 channels per call; do chunks of 4 (its fastest path).
    for start in range(0, channels, 4):
        chunk = np.ascontiguousarray(array[start:start + 4].transpose(1, 2, 0), dtype=np.float32)
        resized = cv2.resize(chunk, (width, height), interpolation=cv2.INTER_LINEAR)
        out[start:start + 4] = resized.reshape(height, width, -1).transpose(2, 0, 1)
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = x.astype(np.float64) - x.max(axis=0, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=0, keepdims=True)


def select_output(outputs, spec: ModelSpec) -> np.ndarray:
    """The output tensor the decode spec reads (one image: CxHxW)."""
    if isinstance(outputs, np.ndarray):
        return outputs
    outputs = list(outputs)
    return outputs[spec.decode.output_index] if len(outputs) > 1 else outputs[0]


def decode(outputs, spec: ModelSpec | str, original_hw: tuple[int, int],
           valid_hw: tuple[int, int] | None = None) -> Prediction:
    """One image's raw outputs → :class:`Prediction` at ``original_hw``.

    Args:
        outputs: the network outputs for one image (no batch axis), a list in output order or the
            selected array.
        original_hw: (H, W) of the image as read (the size masks are produced at).
        valid_hw: region of the network input that holds the image (padding cropped first).
    """
    spec = get_spec(spec)
    dec = spec.decode
    raw = np.asarray(select_output(outputs, spec), dtype=np.float32)
    if raw.ndim == 2:
        raw = raw[None]
    if valid_hw is not None:
        raw = raw[:, : valid_hw[0], : valid_hw[1]]
    height, width = original_hw

    if spec.task == "saliency":
        pred = raw[0].astype(np.float64)
        if dec.normalize == "minmax":  # u2net_test.py normPRED
            lo, hi = pred.min(), pred.max()
            pred = (pred - lo) / (hi - lo) if hi > lo else np.zeros_like(pred)
        if dec.resize_library == "pil":
            from PIL import Image

            # u2net_test.py save_output: Image.fromarray(pred*255).convert('RGB') truncates to 8 bits,
            # then resizes to the original (W, H) with BILINEAR.
            u8 = np.clip(pred * 255.0, 0, 255).astype(np.uint8)
            mask = np.asarray(Image.fromarray(u8).resize((width, height), resample=Image.Resampling.BILINEAR))
            return Prediction(map=mask.astype(np.float32) / 255.0, mask=np.ascontiguousarray(mask))
        prob = _resize_float(pred[None].astype(np.float32), height, width)[0]
        prob = np.clip(prob, 0.0, 1.0)
        return Prediction(map=prob, mask=np.round(prob * 255).astype(np.uint8))

    resized = _resize_float(raw, height, width)
    if dec.activation == "sigmoid":
        probs = _sigmoid(resized)
    elif dec.activation == "softmax":
        probs = _softmax(resized)
    else:
        probs = resized.astype(np.float64)

    if spec.task == "binary":
        if probs.shape[0] == 1:
            fg = probs[0]
            mask = fg > dec.threshold
        else:  # milesial predict.py: argmax over classes; foreground = class 1
            mask = probs.argmax(axis=0) == 1
            fg = probs[1]
        return Prediction(map=fg.astype(np.float32), mask=mask.astype(np.uint8))
    return Prediction(map=probs.astype(np.float32), mask=probs.argmax(axis=0).astype(np.uint8))
