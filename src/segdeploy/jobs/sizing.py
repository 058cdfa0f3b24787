"""A memory estimate made before a run, from image headers only, and the warning it may give.

The estimate is deliberately rough (an upper-bound style sum, not a measurement): decoded pixels as
Pillow and numpy hold them, the network input, the network's activations at that input size, and
the decoded maps at the original size. Activations dominate for native-resolution models; they are
estimated per input pixel from measured peaks on CPU (U²-Netp 320², 1-stage wseg 512²).
"""

from __future__ import annotations

import os
from pathlib import Path

from segdeploy.engine.images import header_size
from segdeploy.engine.transforms import InputPolicy, target_size

#: Bytes of activations per network-input pixel at the forward pass's peak: an upper-bound style
#: constant for the zoo's encoder-decoders on CPU (PyTorch frees each layer's input as it goes).
ACTIVATION_BYTES_PER_PIXEL = 8_000


def total_memory() -> int | None:
    """Physical memory in bytes (None when unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def estimate_bytes(spec, policy: InputPolicy, width: int, height: int) -> tuple[int, tuple[int, int]]:
    """(estimated peak bytes for one image of width x height, network input (H, W))."""
    work_w, work_h = policy.working_size(width, height)
    net_h, net_w = target_size(spec.preprocess, work_h, work_w)
    decoded = work_w * work_h * 7  # Pillow's 4 bytes per RGB pixel + numpy's 3
    network_in = net_h * net_w * 3 * 8
    activations = net_h * net_w * ACTIVATION_BYTES_PER_PIXEL
    maps = width * height * (max(2, spec.num_classes) * 4 + 2)  # float32 maps at the original size + mask
    return decoded + network_in + activations + maps, (net_h, net_w)


def check_memory(spec, policy: InputPolicy, paths: list[Path], max_pixels: int | None,
                 budget: int | None = None) -> str | None:
    """A warning when the largest input is estimated to exceed ``budget`` bytes (default: 80 % of RAM)."""
    limit = budget
    if limit is None:
        ram = total_memory()
        limit = int(ram * 0.8) if ram else None
    if not paths or limit is None:
        return None
    largest, size = None, (0, 0)
    for path in paths:
        try:
            w, h = header_size(path)  # refuses a FIFO before opening it (opening would block)
        except Exception:  # unreadable files are reported by the reader, not here
            continue
        if max_pixels and w * h > max_pixels:
            continue
        if w * h > size[0] * size[1]:
            largest, size = path, (w, h)
    if largest is None:
        return None
    need, (net_h, net_w) = estimate_bytes(spec, policy, *size)
    if need <= limit:
        return None
    note = "" if budget else " (80 % of this machine's memory)"
    hint = "lower --max-size" if spec.preprocess.size is None else "use fewer workers"
    return (f"{largest} ({size[0]}x{size[1]}) runs the network at {net_w}x{net_h} and is estimated to need "
            f"≈{need / 2**30:.1f} GiB, more than the {limit / 2**30:.1f} GiB budget{note}; "
            f"{hint} to stay within it")
