"""Model-specific preprocessing and output decoding, driven entirely by a ModelSpec.

``preprocess`` turns an RGB uint8 image into the float32 CHW array the network was trained on;
``decode`` turns one image's raw network outputs into a map and a mask at the original size.
Each resampling convention reproduces the library the upstream code used (see ``Preprocess``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segdeploy.core.specs import ModelSpec
from segdeploy.tasks import Prediction, get_task

from segdeploy.core.registry import get_spec

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
        image: HxWxC uint8 (read as ``x / 255``, as skimage's ``img_as_float``) or float array in [0, 1].
    Returns:
        float64 HxWxC array.

    Memory: only the source rows the output samples (two per output row) are converted to float64,
    never the whole image, so a 144-megapixel input costs a few MB here. The arithmetic is the same,
    operation for operation, as interpolating a zero-padded float64 copy, so results are bit-identical.
    """
    n_rows, n_cols = image.shape[0], image.shape[1]
    r0, r1, wr = _linear_axis(n_rows, height)
    c0, c1, wc = _linear_axis(n_cols, width)

    def rows_at(index: np.ndarray) -> np.ndarray:
        # Rows -1 and n_rows are the cval=0 ring of the padded image.
        inside = (index >= 0) & (index < n_rows)
        picked = image[np.clip(index, 0, n_rows - 1)]
        values = picked.astype(np.float64) / 255.0 if image.dtype == np.uint8 else picked.astype(np.float64)
        if not inside.all():
            values[~inside] = 0.0
        # (rows, W*C): the row weights then broadcast over one contiguous axis, 3x faster than over
        # (W, C); the same multiplications and additions, so the same bits.
        return values.reshape(len(index), -1)

    shape = (height, n_cols) + image.shape[2:]
    rows = (rows_at(r0) * (1 - wr)[:, None] + rows_at(r1) * wr[:, None]).reshape(shape)

    def cols_at(index: np.ndarray) -> np.ndarray:
        inside = (index >= 0) & (index < n_cols)
        picked = np.take(rows, np.clip(index, 0, n_cols - 1), axis=1)
        if not inside.all():
            picked[:, ~inside] = 0.0
        return picked

    out = cols_at(c0) * (1 - wc)[None, :, None] + cols_at(c1) * wc[None, :, None]
    lo, hi = image.min(), image.max()
    if image.dtype == np.uint8:
        lo, hi = np.float64(lo) / 255.0, np.float64(hi) / 255.0
    # skimage (0.14 _warps.resize → warp(clip=True)) clips the result to the input's value range.
    return np.clip(out, lo, hi)


def resize_image(image: np.ndarray, height: int, width: int, interpolation: str, library: str) -> np.ndarray:
    """Resize an HxWx3 uint8 image with the named library's convention.

    Returns uint8 for "pil" and "cv2" (they resample uint8 images), float64 in [0, 1] for "skimage"
    (skimage converts to float before resampling).
    """
    if library == "skimage":
        if interpolation != "bilinear":
            raise ValueError("the skimage convention is implemented for bilinear (order=1) only")
        return resize_skimage_constant(image, height, width)
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


#: Images up to this many pixels enter a fixed-size model's resize exactly as upstream reads them;
#: larger ones are first reduced (JPEG: decoded at 1/2, 1/4 or 1/8 scale; others: box-filtered) to
#: at least twice the network input on each side. A 24-megapixel camera photo stays bit-exact; a
#: 144-megapixel scan does not cost gigabytes for a 320 x 320 input.
EXACT_PIXELS = 24_000_000


def working_mode(img):
    """A Pillow image in the mode it is reduced in: L (1 byte per pixel; "1" cannot be resampled),
    RGB, or a one-channel integer / float mode as it is."""
    if img.mode in ("1", "L", "LA", "La", "P;1"):
        return img.convert("L")
    if img.mode not in ("RGB", "I", "F", "I;16"):
        return img.convert("RGB")
    return img


@dataclass(frozen=True)
class InputPolicy:
    """How large an image is when it enters :func:`preprocess`, per model (memory policy).

    * Fixed-size models (``Preprocess.size``): unchanged up to :data:`EXACT_PIXELS`; above, reduced
      to at least 2x the network input per side (aspect kept) before the model's own resize.
    * Native-resolution models: the longest side is reduced to ``max_side`` (aspect kept; default
      the model's ``max_input_side``; None or 0 = no limit). Masks are still decoded at the
      original size.

    Attributes:
        spec: the model.
        max_side: longest side for native-resolution models (None = no limit).
    """

    spec: ModelSpec
    max_side: int | None = None

    @classmethod
    def for_model(cls, spec: ModelSpec, max_side: int | None | str = "spec") -> "InputPolicy":
        """``max_side``: "spec" = the model's ``max_input_side``; 0 or None = no limit; N = N."""
        if max_side == "spec":
            max_side = spec.max_input_side
        return cls(spec, int(max_side) if max_side else None)

    def working_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the pixels the model's preprocessing starts from."""
        pre = self.spec.preprocess
        if pre.size is not None:
            if width * height <= EXACT_PIXELS:
                return width, height
            need_h, need_w = 2 * pre.size[0], 2 * pre.size[1]
            factor = min(width / need_w, height / need_h)
        elif self.max_side is not None and max(width, height) > self.max_side:
            factor = max(width, height) / self.max_side
        else:
            return width, height
        if factor <= 1:
            return width, height
        return max(1, round(width / factor)), max(1, round(height / factor))

    def reduce_pil(self, img, full_wh: tuple[int, int]):
        """A Pillow image brought to :meth:`working_size` of the full image (no-op when it is)."""
        from PIL import Image

        target = self.working_size(*full_wh)
        if img.size == target:
            return img
        img = working_mode(img)
        factor = min(img.size[0] // target[0], img.size[1] // target[1])
        if factor >= 2:
            img = img.reduce(factor)  # box filter, in place of the far costlier resampling of every pixel
        if img.size != target:
            img = img.resize(target, Image.Resampling.BILINEAR)
        return img

    def reduce_array(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """(working pixels, original (H, W)) of an HxWx3 uint8 image."""
        original = (image.shape[0], image.shape[1])
        target = self.working_size(original[1], original[0])
        if target == (original[1], original[0]):
            return image, original
        from PIL import Image

        reduced = np.asarray(self.reduce_pil(Image.fromarray(image), (original[1], original[0])).convert("RGB"))
        return np.array(reduced, dtype=np.uint8, copy=True), original


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
    # float32 throughout (speed issue 13): every step is within 1e-6 of float64, the network input is float32.
    x = resized.astype(np.float32, copy=False)
    if pre.channel_order == "BGR":
        x = x[:, :, ::-1]
    if pre.scaling == "div255":
        if resized.dtype == np.uint8:
            x = x / np.float32(255.0)
    elif pre.scaling == "divmax":
        # U-2-Net ToTensorLab(flag=0): image / np.max(image) over all pixels and channels.
        peak = x.max()
        x = x / peak if peak > 0 else x
    else:
        raise ValueError(f"unknown scaling {pre.scaling!r}")
    if pre.mean is not None:
        x = (x - np.asarray(pre.mean, dtype=np.float32)) / np.asarray(pre.std, dtype=np.float32)
    if pre.post_divide != 1.0:
        x = x / np.float32(pre.post_divide)
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


def select_output(outputs, spec: ModelSpec) -> np.ndarray:
    """The output tensor the decode spec reads (one image: CxHxW)."""
    if isinstance(outputs, np.ndarray):
        return outputs
    outputs = list(outputs)
    return outputs[spec.decode.output_index] if len(outputs) > 1 else outputs[0]


def decode(outputs, spec: ModelSpec | str, original_hw: tuple[int, int],
           valid_hw: tuple[int, int] | None = None) -> Prediction:
    """One image's raw outputs → :class:`Prediction` at ``original_hw`` (the task decodes).

    Args:
        outputs: the network outputs for one image (no batch axis), a list in output order or the
            selected array.
        original_hw: (H, W) of the image as read (the size masks are produced at).
        valid_hw: region of the network input that holds the image (padding cropped first).
    """
    spec = get_spec(spec)
    raw = np.asarray(select_output(outputs, spec), dtype=np.float32)
    if raw.ndim == 2:
        raw = raw[None]
    if valid_hw is not None:
        raw = raw[:, : valid_hw[0], : valid_hw[1]]
    return get_task(spec).decode(raw, spec, tuple(original_hw))


def prediction_from_8bit_map(mask: np.ndarray) -> Prediction:
    """A saliency :class:`Prediction` from the 8-bit map a runtime decoded on its device (the mask
    U²-Net's ``save_output`` writes; the map is that mask / 255, as the host decoding gives it)."""
    return Prediction(mask=mask, lazy_map=lambda: mask.astype(np.float32) / np.float32(255.0))
