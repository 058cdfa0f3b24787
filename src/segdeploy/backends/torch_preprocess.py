"""A model's preprocessing (and, for 8-bit saliency maps, its decoding) as torch operations, so that
decoded uint8 photos go to the GPU and the network input is made there.

The host path (:mod:`segdeploy.engine.transforms`) reproduces each upstream library bit for bit in
float64 on the CPU; that costs ~20 ms of a core per 640x480 photo for U²-Net's skimage resize, which
starved an H200 (5.3 s of thread time for 256 photos). The same arithmetic runs here in float32 on
the device. It is the same function, not the same bits: tests/test_device_preprocess.py holds it to
the host path on the trained U²-Netp (mask IoU >= 0.999, map MAE <= 1e-3) and runs on the CPU with
the same code.

Supported: fixed-size models (``Preprocess.size``) resized bilinearly with the skimage, PIL or cv2
convention. Others (native-size models, bicubic / nearest) keep the host path.
"""

from __future__ import annotations

from typing import Any


def supports_preprocessing(spec) -> bool:
    pre = spec.preprocess
    return pre.size is not None and pre.interpolation == "bilinear" and pre.resize_library in ("skimage", "pil", "cv2")


def supports_mask_decoding(spec) -> bool:
    """8-bit saliency maps (min-max, truncated to uint8, PIL-bilinear to the photo's size): U²-Net's
    ``save_output``, the one decoding whose output is the mask itself."""
    dec = spec.decode
    return spec.task == "saliency" and dec.resize_library == "pil" and dec.normalize == "minmax"


def _axis_taps(torch, n_in: int, n_out: int, device):
    """Half-pixel bilinear taps along one axis of a zero-padded axis (index 0 and n_in + 1 are the
    cval=0 ring): (low index, high index, weight of the high one)."""
    src = (torch.arange(n_out, device=device, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
    lo = torch.floor(src)
    weight = (src - lo).to(torch.float32)
    lo = lo.to(torch.long) + 1  # shift into the padded axis
    return lo.clamp(0, n_in + 1), (lo + 1).clamp(0, n_in + 1), weight


def resize_skimage_constant(torch, x, height: int, width: int):
    """``skimage.transform.resize(order=1, mode='constant', cval=0, anti_aliasing=False)`` of an
    NCHW float batch in [0, 1]: half-pixel sampling, samples outside the image blend with 0, the
    result clipped to each image's [min, max] (as :func:`segdeploy.engine.transforms.resize_skimage_constant`)."""
    import torch.nn.functional as F

    n, _, h_in, w_in = x.shape
    padded = F.pad(x, (1, 1, 1, 1))
    r0, r1, wr = _axis_taps(torch, h_in, height, x.device)
    c0, c1, wc = _axis_taps(torch, w_in, width, x.device)
    rows = padded.index_select(2, r0) * (1 - wr)[:, None] + padded.index_select(2, r1) * wr[:, None]
    out = rows.index_select(3, c0) * (1 - wc) + rows.index_select(3, c1) * wc
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    return torch.minimum(torch.maximum(out, lo), hi)


def preprocess_on_device(torch, images, spec):
    """NHWC uint8 device tensor -> NCHW float32 network input, as the model's upstream code makes it."""
    import torch.nn.functional as F

    pre = spec.preprocess
    height, width = pre.size
    x = images.permute(0, 3, 1, 2).to(torch.float32)
    if pre.resize_library == "skimage":
        x = resize_skimage_constant(torch, x / 255.0, height, width)  # img_as_float, then resample
        scaled_already = True
    else:
        if x.shape[2:] != (height, width):
            # PIL filters with a support that grows with the reduction (antialias=True follows it);
            # cv2's INTER_LINEAR samples two taps whatever the scale. Both return uint8.
            x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False,
                              antialias=pre.resize_library == "pil")
            x = x.round().clamp(0, 255)
        scaled_already = False
    if pre.channel_order == "BGR":
        x = x.flip(1)
    if pre.scaling == "div255":
        if not scaled_already:
            x = x / 255.0
    elif pre.scaling == "divmax":
        peak = x.amax(dim=(1, 2, 3), keepdim=True)
        x = torch.where(peak > 0, x / peak.clamp_min(1e-12), x)
    else:
        raise ValueError(f"unknown scaling {pre.scaling!r}")
    if pre.mean is not None:
        mean = torch.tensor(pre.mean, device=x.device, dtype=torch.float32)[None, :, None, None]
        std = torch.tensor(pre.std, device=x.device, dtype=torch.float32)[None, :, None, None]
        x = (x - mean) / std
    if pre.post_divide != 1.0:
        x = x / pre.post_divide
    return x.contiguous()


def decode_masks_on_device(torch, output, height: int, width: int):
    """U²-Net's ``save_output`` for a batch: per-image min-max of channel 0, truncation to 8 bits,
    PIL-bilinear resize to (height, width), uint8 (N, H, W)."""
    import torch.nn.functional as F

    pred = output[:, :1].to(torch.float32)
    lo = pred.amin(dim=(1, 2, 3), keepdim=True)
    hi = pred.amax(dim=(1, 2, 3), keepdim=True)
    span = hi - lo
    pred = torch.where(span > 0, (pred - lo) / span.clamp_min(1e-30), torch.zeros_like(pred))
    levels = torch.floor((pred * 255.0).clamp(0, 255))
    if levels.shape[2:] != (height, width):
        levels = F.interpolate(levels, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return levels.round().clamp(0, 255).to(torch.uint8)[:, 0]


def describe(spec) -> dict[str, Any]:
    return {"preprocess": supports_preprocessing(spec), "mask_decoding": supports_mask_decoding(spec)}
