"""U²-Net and U²-Netp (Qin et al., Pattern Recognition 2020), rebuilt from the facts in docs/models.md §1.

Reference: xuebinqin/U-2-Net @ a179b4b, ``model/u2net.py`` (Apache-2.0). This is an independent
re-implementation: one residual U-block class parametrised by its depth (upstream RSU7 … RSU4), one
dilated block (RSU-4F) and a network built from a stage table. Module attribute names are chosen so
that ``state_dict()`` has exactly upstream's keys, shapes and order, so the official ``u2net.pth`` /
``u2netp.pth`` load with ``strict=True``.

Numerically relevant details kept from upstream:

* every 3x3 conv has a bias even though BatchNorm follows it;
* pooling is ``max_pool2d(2, 2, ceil_mode=True)`` (odd sizes round *up*);
* every upsampling is bilinear with ``align_corners=False`` to the *exact* size of the tensor it is
  concatenated with / added to (never a fixed ×2), so any input size works;
* the forward returns seven sigmoid maps, fused ``d0`` first, then the side outputs ``d1 … d6``,
  all at the input resolution; ``d6`` comes from encoder stage 6, not from a decoder stage.

Sizes are always read from tensor shapes at run time, so ``torch.onnx.export`` with dynamic batch,
height and width produces a graph valid for any input size.
"""

from __future__ import annotations

from segdeploy.core.registry import register_model
from segdeploy.core.specs import IMAGENET_MEAN, IMAGENET_STD, Decode, ModelSpec, Preprocess, PublishedMetric, WeightsVariant

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvBNReLU", "RSU", "RSU4F", "U2Net", "StageConfig", "U2NET_FULL", "U2NET_SMALL",
           "u2net_full", "u2net_small"]


def _pool(x: torch.Tensor) -> torch.Tensor:
    # ceil_mode: a 75-pixel side becomes 38, not 37; the decoder upsamples back to the skip size.
    return F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)


def _resize_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Bilinear (align_corners=False) resize of ``x`` to ``ref``'s spatial size.

    Upstream calls the deprecated ``F.upsample(..., mode='bilinear')``, whose align_corners default
    is False. The size is taken from ``ref.shape`` so that exported graphs stay size-agnostic.
    """
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class ConvBNReLU(nn.Module):
    """3x3 conv (with bias, padding = dilation) → BatchNorm → ReLU. Upstream name: REBNCONV.

    Attribute names ``conv_s1`` / ``bn_s1`` are upstream's state_dict names.
    """

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)
        self.bn_s1 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn_s1(self.conv_s1(x)))


class RSU(nn.Module):
    """Residual U-block of height ``depth`` (upstream RSU7, RSU6, RSU5, RSU4 for depth 7…4).

    Encoder: ``rebnconvin`` (in→out), ``rebnconv1`` (out→mid), then ``rebnconv2 … rebnconv{L-1}``
    each after a 2x2 ceil-mode max-pool, then ``rebnconv{L}`` with dilation 2 and no pooling.
    Decoder: ``rebnconv{L-1}d … rebnconv1d`` on cat(deeper, skip) (2·mid channels); from the second
    decoder step on, the deeper map is first resized to the skip's size. ``rebnconv1d`` maps to
    ``out``; the block returns ``decoded + rebnconvin(x)``.
    """

    def __init__(self, depth: int, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__()
        if depth < 3:
            raise ValueError(f"RSU depth must be >= 3, got {depth}")
        self.depth = depth
        self.rebnconvin = ConvBNReLU(in_channels, out_channels)
        self.rebnconv1 = ConvBNReLU(out_channels, mid_channels)
        for k in range(2, depth):
            setattr(self, f"rebnconv{k}", ConvBNReLU(mid_channels, mid_channels))
        setattr(self, f"rebnconv{depth}", ConvBNReLU(mid_channels, mid_channels, dilation=2))
        for k in range(depth - 1, 0, -1):
            out = out_channels if k == 1 else mid_channels
            setattr(self, f"rebnconv{k}d", ConvBNReLU(2 * mid_channels, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.rebnconvin(x)
        skips = []
        h = residual
        for k in range(1, self.depth):
            h = getattr(self, f"rebnconv{k}")(h if k == 1 else _pool(h))
            skips.append(h)
        h = getattr(self, f"rebnconv{self.depth}")(h)
        for k in range(self.depth - 1, 0, -1):
            skip = skips[k - 1]
            if k < self.depth - 1:  # the innermost pair already has equal sizes
                h = _resize_like(h, skip)
            h = getattr(self, f"rebnconv{k}d")(torch.cat((h, skip), dim=1))
        return h + residual


class RSU4F(nn.Module):
    """Dilated residual U-block without resampling (upstream RSU4F), used at the lowest resolution.

    Encoder dilations 1, 2, 4 then ``rebnconv4`` with dilation 8; decoder ``rebnconv3d`` (d 4),
    ``rebnconv2d`` (d 2), ``rebnconv1d`` (d 1, → out) on cat(deeper, skip); residual add.
    """

    _DILATIONS = (1, 2, 4, 8)  # rebnconv1..4; decoder k reuses the dilation of encoder k

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__()
        self.rebnconvin = ConvBNReLU(in_channels, out_channels)
        for k, dilation in enumerate(self._DILATIONS, start=1):
            cin = out_channels if k == 1 else mid_channels
            setattr(self, f"rebnconv{k}", ConvBNReLU(cin, mid_channels, dilation))
        for k in range(len(self._DILATIONS) - 1, 0, -1):
            out = out_channels if k == 1 else mid_channels
            setattr(self, f"rebnconv{k}d", ConvBNReLU(2 * mid_channels, out, self._DILATIONS[k - 1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.rebnconvin(x)
        depth = len(self._DILATIONS)
        skips = []
        h = residual
        for k in range(1, depth):
            h = getattr(self, f"rebnconv{k}")(h)
            skips.append(h)
        h = getattr(self, f"rebnconv{depth}")(h)
        for k in range(depth - 1, 0, -1):
            h = getattr(self, f"rebnconv{k}d")(torch.cat((h, skips[k - 1]), dim=1))
        return h + residual


@dataclass(frozen=True)
class StageConfig:
    """One U²-Net stage: block height (7…4, or 0 for RSU-4F) and its channel widths."""

    depth: int
    in_channels: int
    mid_channels: int
    out_channels: int

    def build(self) -> nn.Module:
        if self.depth == 0:
            return RSU4F(self.in_channels, self.mid_channels, self.out_channels)
        return RSU(self.depth, self.in_channels, self.mid_channels, self.out_channels)


_F = 0  # depth marker for RSU-4F

#: Encoder stage1..stage6, then decoder stage5d..stage1d (upstream U2NET(3, 1)).
U2NET_FULL: tuple[tuple[StageConfig, ...], tuple[StageConfig, ...]] = (
    (StageConfig(7, 3, 32, 64), StageConfig(6, 64, 32, 128), StageConfig(5, 128, 64, 256),
     StageConfig(4, 256, 128, 512), StageConfig(_F, 512, 256, 512), StageConfig(_F, 512, 256, 512)),
    # stage1d has mid 16 (not 32) upstream.
    (StageConfig(_F, 1024, 256, 512), StageConfig(4, 1024, 128, 256), StageConfig(5, 512, 64, 128),
     StageConfig(6, 256, 32, 64), StageConfig(7, 128, 16, 64)),
)

#: Upstream U2NETP(3, 1): every stage mid 16, out 64.
U2NET_SMALL: tuple[tuple[StageConfig, ...], tuple[StageConfig, ...]] = (
    (StageConfig(7, 3, 16, 64), StageConfig(6, 64, 16, 64), StageConfig(5, 64, 16, 64),
     StageConfig(4, 64, 16, 64), StageConfig(_F, 64, 16, 64), StageConfig(_F, 64, 16, 64)),
    (StageConfig(_F, 128, 16, 64), StageConfig(4, 128, 16, 64), StageConfig(5, 128, 16, 64),
     StageConfig(6, 128, 16, 64), StageConfig(7, 128, 16, 64)),
)


class U2Net(nn.Module):
    """Two-level nested U-structure: six encoder stages, five decoder stages, six side heads.

    Args:
        config: (encoder stages 1…6, decoder stages 5d…1d), e.g. :data:`U2NET_FULL`. Encoder
            stage k's input channels must be stage k-1's output; decoder stage kd takes
            cat(deeper decoder output resized to stage k's size, stage k output).
        in_channels: channels of the input image (replaces the first stage's in_channels).
        out_channels: channels of every side output and of the fused output.

    Forward:
        x: N x in_channels x H x W float32 (any H, W ≥ 1).
        Returns a 7-tuple of N x out_channels x H x W probabilities:
        ``sigmoid(d0)`` (fused, 1x1 conv ``outconv`` over cat(d1…d6)), then ``sigmoid(d1)`` …
        ``sigmoid(d6)`` where d_k = ``side{k}`` (3x3 conv) on decoder stage k (d6: encoder stage 6),
        bilinearly resized to the input size.
    """

    def __init__(self, config: tuple[tuple[StageConfig, ...], tuple[StageConfig, ...]],
                 in_channels: int = 3, out_channels: int = 1) -> None:
        super().__init__()
        encoder, decoder = config
        if len(decoder) != len(encoder) - 1:
            raise ValueError("U2Net config needs one decoder stage fewer than encoder stages")
        self.num_stages = len(encoder)
        n = self.num_stages
        first = encoder[0]
        encoder = (StageConfig(first.depth, in_channels, first.mid_channels, first.out_channels),
                   *encoder[1:])
        # Registration order = upstream state_dict order: stage1..6, stage5d..1d, side1..6, outconv.
        for k, stage in enumerate(encoder, start=1):
            setattr(self, f"stage{k}", stage.build())
        for k, stage in zip(range(n - 1, 0, -1), decoder):
            setattr(self, f"stage{k}d", stage.build())
        side_inputs = [stage.out_channels for stage in reversed(decoder)] + [encoder[-1].out_channels]
        for k, channels in enumerate(side_inputs, start=1):
            setattr(self, f"side{k}", nn.Conv2d(channels, out_channels, 3, padding=1))
        self.outconv = nn.Conv2d(n * out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = self.num_stages
        encoded = []
        h = x
        for k in range(1, n + 1):
            h = getattr(self, f"stage{k}")(h if k == 1 else _pool(h))
            encoded.append(h)
        # Decoder: the deepest encoder output (stage n) plays the role of "decoder n".
        decoded = [h]
        for k in range(n - 1, 0, -1):
            skip = encoded[k - 1]
            h = getattr(self, f"stage{k}d")(torch.cat((_resize_like(h, skip), skip), dim=1))
            decoded.append(h)
        decoded.reverse()  # decoded[k-1] feeds side{k}: stage1d … stage{n-1}d, stage n
        d1 = self.side1(decoded[0])
        sides = [d1] + [_resize_like(getattr(self, f"side{k}")(decoded[k - 1]), d1)
                        for k in range(2, n + 1)]
        d0 = self.outconv(torch.cat(sides, dim=1))
        return tuple(torch.sigmoid(d) for d in (d0, *sides))


def u2net_full(in_channels: int = 3, out_channels: int = 1) -> U2Net:
    """U²-Net, 44.0 M parameters (upstream ``U2NET(3, 1)``; checkpoint ``u2net.pth``)."""
    return U2Net(U2NET_FULL, in_channels, out_channels)


def u2net_small(in_channels: int = 3, out_channels: int = 1) -> U2Net:
    """U²-Netp, 1.13 M parameters (upstream ``U2NETP(3, 1)``; checkpoint ``u2netp.pth``)."""
    return U2Net(U2NET_SMALL, in_channels, out_channels)


# -- registry entries ---------------------------------------------------------------------------

_PRE = Preprocess(
    size=(320, 320),
    interpolation="bilinear",
    # U-2-Net data_loader.RescaleT: skimage.transform.resize(order=1, mode='constant'),
    # scikit-image 0.14 (no anti-aliasing).
    resize_library="skimage",
    channel_order="RGB",
    # data_loader.ToTensorLab(flag=0): image / np.max(image), not / 255.
    scaling="divmax",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    multiple_of=1,
)
# u2net_test.py: pred = d1[:, 0]; normPRED (per-image min-max); x255 into an 8-bit image;
# PIL resize to the original (W, H) with BILINEAR.
_DECODE = Decode(output_index=0, activation="none", normalize="minmax", resize_library="pil")
_OUTPUTS = ("d0", "d1", "d2", "d3", "d4", "d5", "d6")
_SOURCE = "xuebinqin/U-2-Net @ a179b4b, model/u2net.py"
_NOTES = ("Known difference: upstream normalises a single-channel (grayscale) file with the red "
          "channel's mean/std on all three channels; segdeploy reads every image as RGB and uses "
          "per-channel statistics, so grayscale inputs differ slightly.")
_PROVENANCE = "Trained by the U-2-Net authors (Qin et al., Pattern Recognition 2020) on DUTS-TR."

_PAPER = "U²-Net paper (Pattern Recognition 2020)"
_ASCEND_000 = "CANN 6.0.RC1, ATC .om (onnxsim + fix_onnx), ais_bench pure-inference loop 20"

register_model(ModelSpec(
    name="u2net",
    title="U²-Net (full, 44.0 M params) — salient object detection",
    task="saliency",
    num_classes=1,
    builder=u2net_full,
    preprocess=_PRE,
    decode=_DECODE,
    input_size=(320, 320),
    source=_SOURCE,
    license="Apache-2.0",
    manifest="u2net.state_dict.json",
    output_names=_OUTPUTS,
    notes=_NOTES,
    weights=(WeightsVariant(
        name="official",
        file_name="u2net.pth",
        url="https://drive.google.com/file/d/1ao1ovG1Qtx4b7EoskHXmi2E9rp5CHLcZ/view",
        licence="Apache-2.0",
        provenance=_PROVENANCE,
        how_to_get="Download u2net.pth (176.3 MB) from the U-2-Net README's link, then pass --weights u2net.pth.",
        published=(
            PublishedMetric("maxF", 0.951, _PAPER, dataset="ecssd", software="upstream PyTorch"),
            PublishedMetric("MAE", 0.033, _PAPER, dataset="ecssd", software="upstream PyTorch"),
            PublishedMetric("maxF", 0.948, "seed guide 000", dataset="ecssd", hardware="Ascend 310P",
                            software=_ASCEND_000, batch_size=1, note="same value printed for batch sizes 1 to 64"),
            PublishedMetric("MAE", 0.033, "seed guide 000", dataset="ecssd", hardware="Ascend 310P",
                            software=_ASCEND_000, batch_size=1, note="same value printed for batch sizes 1 to 64"),
        ),
    ),),
))

register_model(ModelSpec(
    name="u2netp",
    title="U²-Netp (small, 1.1 M params) — salient object detection; trained weights included",
    task="saliency",
    num_classes=1,
    builder=u2net_small,
    preprocess=_PRE,
    decode=_DECODE,
    input_size=(320, 320),
    source=_SOURCE,
    license="Apache-2.0",
    manifest="u2netp.state_dict.json",
    output_names=_OUTPUTS,
    notes=_NOTES,
    weights=(WeightsVariant(
        name="official",
        file_name="u2netp.pth",
        url="https://drive.google.com/file/d/1rbSTGKAE-MTxBYHd-51l2hMOQPT_7EPy/view",
        licence="Apache-2.0",
        provenance=_PROVENANCE + " Packaged from the ONNX file rembg redistributes (BatchNorm folded into "
        "the convolutions, BatchNorm layers set to identity); see assets/weights/README.md.",
        how_to_get="Included in the package: --weights official (the default for u2netp).",
        published=(
            PublishedMetric("maxF", 0.923, _PAPER, dataset="ecssd", software="upstream PyTorch"),
            PublishedMetric("MAE", 0.051, _PAPER, dataset="ecssd", software="upstream PyTorch"),
        ),
        asset="assets/weights/u2netp_official.safetensors",
    ),),
    default_weights="official",
    # int8 weights of this one convolution alone move the trained saliency map by 0.17 mean |error|
    # on real photos, every other convolution's by < 0.01 (the decoder amplifies its rounding; its
    # own weight error, 4 %, is ordinary, so no per-layer statistic finds it). Kept float, OpenVINO
    # int8 (NNCF) passes the fidelity gate at ~3x fp32 speed: benchmarks/results/int8_trained_u2netp_cpu.md.
    int8_float_layers=("/stage2d/rebnconv1d/",),
))
