"""Work per image: multiply-accumulates of the convolutions and linear layers, counted with hooks.

The convention is the one of docs/models.md §6 and docs/performance.md §2: only ``Conv*d``,
``ConvTranspose*d`` and ``Linear`` are counted (BatchNorm, activations, pooling, resizing and
softmax are left out, they are memory-bound and small), biases are not counted, and one MAC is
two FLOP. For a layer with output ``Y`` and input ``X``:

* convolution: ``MACs = numel(Y) * (C_in / groups) * prod(kernel)``
  (every output element is a dot product over ``C_in/groups`` channels times the kernel window);
* transposed convolution: ``MACs = numel(X) * (C_out / groups) * prod(kernel)``
  (every input element is scattered, multiplied by a ``C_out/groups`` x kernel block);
* linear: ``MACs = (numel(X) / in_features) * in_features * out_features``.

Counting runs the module's forward once. By default it runs on the ``meta`` device (shapes only,
no arithmetic, no memory), so a 5-TFLOP network is counted in milliseconds; when a model cannot run
on ``meta`` the count falls back to a real forward on CPU.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

FLOP_PER_MAC = 2


@dataclass(frozen=True)
class FlopCount:
    """Result of :func:`count_flops` (numbers are per image, i.e. divided by the batch size).

    Attributes:
        input_size: (height, width) of the input the count was made at.
        macs: multiply-accumulates per image of the counted layer types.
        flops: ``FLOP_PER_MAC * macs``.
        params: parameters of the whole module (every parameter, counted layers or not).
        layers: number of counted layer calls (a module called twice counts twice).
        by_type: MACs per image for each counted layer type name.
        method: "meta" (shape-only forward) or "cpu" (real forward).
    """

    input_size: tuple[int, int]
    macs: int
    flops: int
    params: int
    layers: int
    by_type: dict[str, int] = field(default_factory=dict)
    method: str = "meta"

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["input_size"] = list(self.input_size)
        return out


def layer_macs(module: "torch.nn.Module", inputs: tuple, output: Any) -> int:
    """MACs of one call of a Conv/ConvTranspose/Linear module for the whole batch (0 for others)."""
    import torch.nn as nn

    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        x = inputs[0]
        per_input = (module.out_channels // module.groups) * math.prod(module.kernel_size)
        return int(x.numel()) * per_input
    if isinstance(module, nn.modules.conv._ConvNd):
        y = output
        per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
        return int(y.numel()) * per_output
    if isinstance(module, nn.Linear):
        x = inputs[0]
        rows = int(x.numel()) // module.in_features
        return rows * module.in_features * module.out_features
    return 0


def _counted_types() -> tuple[type, ...]:
    import torch.nn as nn

    return (nn.modules.conv._ConvNd, nn.Linear)


def _run_counting(module: "torch.nn.Module", x: "torch.Tensor") -> tuple[int, int, dict[str, int]]:
    import torch

    total = 0
    calls = 0
    by_type: dict[str, int] = {}

    def hook(mod, inputs, output):
        nonlocal total, calls
        macs = layer_macs(mod, inputs, output)
        total += macs
        calls += 1
        key = type(mod).__name__
        by_type[key] = by_type.get(key, 0) + macs

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, _counted_types())]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for handle in handles:
            handle.remove()
    return total, calls, by_type


def count_flops(
    module: "torch.nn.Module",
    input_size: tuple[int, int],
    *,
    in_channels: int = 3,
    batch: int = 1,
    use_meta: bool = True,
) -> FlopCount:
    """Count MACs/FLOPs per image of ``module`` for an NCHW input of ``input_size``.

    Args:
        module: the network (left unchanged: the meta count runs on a deep copy, the CPU count in
            eval mode and restores the training flag).
        input_size: (height, width) in pixels.
        in_channels: input channels (3 for every registry model).
        batch: batch size of the counting forward; results are divided by it (a model whose work
            per image depends on the batch would show it here).
        use_meta: try a shape-only forward on the ``meta`` device first.

    Returns:
        A :class:`FlopCount` with per-image numbers.
    """
    import torch

    height, width = (int(v) for v in input_size)
    if height <= 0 or width <= 0 or batch <= 0:
        raise ValueError(f"input size {input_size} and batch {batch} must be positive")
    params = sum(int(p.numel()) for p in module.parameters())
    result = None
    method = "meta"
    if use_meta:
        try:
            shadow = copy.deepcopy(module).to("meta").eval()
            x = torch.empty(batch, in_channels, height, width, device="meta")
            result = _run_counting(shadow, x)
        except Exception:  # noqa: BLE001 - any op without a meta kernel: count for real instead
            result = None
    if result is None:
        method = "cpu"
        was_training = module.training
        module.eval()
        try:
            generator = torch.Generator().manual_seed(0)
            x = torch.randn(batch, in_channels, height, width, generator=generator)
            result = _run_counting(module, x)
        finally:
            module.train(was_training)
    total, calls, by_type = result
    macs = total // batch
    return FlopCount(
        input_size=(height, width),
        macs=macs,
        flops=FLOP_PER_MAC * macs,
        params=params,
        layers=calls,
        by_type={k: v // batch for k, v in by_type.items()},
        method=method,
    )


def flops_for_model(name: str, input_size: tuple[int, int] | None = None) -> FlopCount:
    """Count a registry model at ``input_size`` (default: its spec's input size).

    The network is built directly on the ``meta`` device (no weights are allocated or loaded; the
    count does not depend on weight values); if that fails it is built on CPU with random init.
    """
    import torch

    from segdeploy.core.registry import get_spec

    spec = get_spec(name)
    size = tuple(input_size) if input_size is not None else tuple(spec.input_size)
    try:
        with torch.device("meta"):
            module = spec.build()
        return count_flops(module.eval(), size)
    except Exception:  # noqa: BLE001 - fall back to a real CPU build
        module = spec.build().eval()
        return count_flops(module, size, use_meta=False)
