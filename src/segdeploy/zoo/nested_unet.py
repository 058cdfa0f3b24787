"""UNet++ (Zhou et al., 2018), one class for the two upstream implementations in the registry.

Facts from docs/models.md §3–§4, checked against both upstream files:

* 4uiiurz1/pytorch-nested-unet @ 557ea02 ``archs.py`` ``NestedUNet(num_classes=1, input_channels=3,
  deep_supervision=False)``: widths 32..512, ``self.up`` bilinear with align_corners=True. The Ascend
  ModelZoo weights were trained after a patch that makes that upsample ``mode='nearest'``.
* bigmb/Unet-Segmentation-Pytorch-Nest-of-Unets @ f63262d ``Models.py`` ``NestedUNet(in_ch=3,
  out_ch=1)``: widths 64..1024, ``self.Up`` bilinear with align_corners=True.

Both use the same block (3x3 conv with bias -> BN -> ReLU, twice; ``conv1, bn1, conv2, bn2``), the same
node wiring and the same key names ``conv{i}_{j}.*`` and ``final``; only the widths differ. Neither
upsample has parameters, so the upsampling mode is invisible in a checkpoint.

Node (i, j) (depth i, column j): j = 0 is ``block(pool(x[i-1][0]))`` (the input for i = 0); j >= 1 is
``block(cat(x[i][0], ..., x[i][j-1], up(x[i+1][j-1])))`` — skips first, upsampled tensor last.
``final`` (1x1 conv with bias) maps x[0][4] to logits. Max-pools floor and the upsample doubles, so H
and W must be multiples of 16.
"""

from __future__ import annotations

from segdeploy.core.registry import register_model
from segdeploy.core.specs import IMAGENET_MEAN, IMAGENET_STD, Decode, ModelSpec, Preprocess, PublishedMetric, WeightsVariant

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

UPSAMPLE_MODES = ("bilinear", "nearest")
DEPTH = 5


class ConvBlock(nn.Module):
    """3x3 conv (bias) -> BatchNorm -> ReLU -> 3x3 conv (bias) -> BatchNorm -> ReLU.

    Same math as 4uiiurz1 ``VGGBlock`` and bigmb ``conv_block_nested``; keys ``conv1, bn1, conv2, bn2``.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.conv2 = nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


class NestedUNet(nn.Module):
    """UNet++ without deep supervision.

    Args:
        widths: channels at depths 0..4; (32, 64, 128, 256, 512) for 4uiiurz1, (64, ..., 1024) for bigmb.
        num_classes: output logit channels.
        upsample: "bilinear" (align_corners=True, both upstreams) or "nearest" (Ascend-trained 4uiiurz1).
        in_channels: input channels.

    Forward takes (N, in_channels, H, W) with H, W multiples of 16 and returns (N, num_classes, H, W)
    logits (no sigmoid).
    """

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 256, 512), num_classes: int = 1,
                 upsample: str = "bilinear", in_channels: int = 3) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != DEPTH:
            raise ValueError(f"NestedUNet needs {DEPTH} widths (one per depth), got {widths}")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        self.widths = widths
        self.num_classes = num_classes
        self.upsample = upsample
        self.in_channels = in_channels
        # Registration order = upstream's (column by column: conv0_0..conv4_0, conv0_1..conv3_1, ...),
        # which fixes the state_dict order.
        for j in range(DEPTH):
            for i in range(DEPTH - j):
                if j == 0:
                    cin = in_channels if i == 0 else widths[i - 1]
                else:
                    cin = widths[i] * j + widths[i + 1]
                self.add_module(f"conv{i}_{j}", ConvBlock(cin, widths[i], widths[i]))
        self.final = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample == "bilinear":
            return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        return F.interpolate(x, scale_factor=2.0, mode="nearest")

    def _node(self, i: int, j: int) -> nn.Module:
        return getattr(self, f"conv{i}_{j}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_multiple(x, 16, type(self).__name__)
        # nodes[i][j] = x_{i}_{j}; computed column by column as upstream does.
        nodes: list[list[torch.Tensor]] = [[] for _ in range(DEPTH)]
        nodes[0].append(self._node(0, 0)(x))
        for i in range(1, DEPTH):
            nodes[i].append(self._node(i, 0)(F.max_pool2d(nodes[i - 1][0], 2, 2)))
            for j in range(1, i + 1):
                d = i - j
                inputs = nodes[d][:j] + [self._up(nodes[d + 1][j - 1])]
                nodes[d].append(self._node(d, j)(torch.cat(inputs, dim=1)))
        return self.final(nodes[0][DEPTH - 1])


def check_multiple(x: torch.Tensor, multiple: int, who: str) -> None:
    """Raise a clear ValueError when eager input H/W are not multiples of ``multiple``.

    Only plain Python sizes are checked: under torch.export (symbolic sizes) the check is skipped so
    it never becomes part of an exported graph.
    """
    if x.dim() != 4:
        raise ValueError(f"{who} expects an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    h, w = x.shape[-2], x.shape[-1]
    if isinstance(h, int) and isinstance(w, int) and (h % multiple or w % multiple):
        raise ValueError(
            f"{who} needs height and width divisible by {multiple} (4 poolings, fixed x2 upsampling); "
            f"got {h}x{w}. Resize or pad the input first."
        )


# -- registry entries ---------------------------------------------------------------------------

_DSB_PRE = Preprocess(
    size=(96, 96),
    interpolation="bilinear",
    resize_library="cv2",
    # val.py reads with cv2.imread (BGR); albumentations Normalize() (ImageNet stats, max 255) is
    # applied to the BGR array as is; dataset.py then divides by 255 once more.
    channel_order="BGR",
    scaling="div255",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    post_divide=255.0,
    multiple_of=16,
)
_DSB_DECODE = Decode(output_index=0, activation="sigmoid", threshold=0.5, resize_library="torch")
_DSB_WIDTHS = (32, 64, 128, 256, 512)

register_model(ModelSpec(
    name="unetpp_dsb2018",
    title="UNet++ (4uiiurz1, bilinear upsampling) — DSB2018 nuclei 96²",
    task="binary",
    num_classes=1,
    builder=NestedUNet,
    builder_kwargs={"widths": _DSB_WIDTHS, "num_classes": 1, "upsample": "bilinear"},
    preprocess=_DSB_PRE,
    decode=_DSB_DECODE,
    input_size=(96, 96),
    source="4uiiurz1/pytorch-nested-unet @ 557ea02, archs.py",
    license="MIT",
    manifest="nested_unet_dsb.state_dict.json",
    output_names=("logits",),
    weights=(WeightsVariant(
        name="official",
        file_name="model.pth",
        licence="MIT",
        how_to_get="Upstream releases no weights: train with 4uiiurz1/pytorch-nested-unet "
        "(train.py --dataset dsb2018_96 --arch NestedUNet) and pass models/<name>/model.pth.",
        published=(PublishedMetric("iou", 0.842, "4uiiurz1/pytorch-nested-unet README", dataset="dsb2018",
                                   software="upstream PyTorch (bilinear upsampling)"),),
    ),),
))

register_model(ModelSpec(
    name="unetpp_dsb2018_nearest",
    title="UNet++ (4uiiurz1 with nearest upsampling, Ascend-trained variant) — DSB2018 96²",
    task="binary",
    num_classes=1,
    builder=NestedUNet,
    builder_kwargs={"widths": _DSB_WIDTHS, "num_classes": 1, "upsample": "nearest"},
    preprocess=_DSB_PRE,
    decode=_DSB_DECODE,
    input_size=(96, 96),
    source="4uiiurz1/pytorch-nested-unet @ 557ea02 + Ascend nested_unet.diff (self.up mode='nearest')",
    license="MIT",
    manifest="nested_unet_dsb.state_dict.json",
    output_names=("logits",),
    weights=(WeightsVariant(
        name="official",
        file_name="nested_unet.pth",
        how_to_get="The Ascend ModelZoo (ACL_PyTorch/contrib/cv/segmentation/Nested_UNet) ships "
        "nested_unet.pth; pass it with --weights.",
        published=(PublishedMetric(
            "iou", 0.8385, "seed guide 002", dataset="dsb2018", hardware="Ascend 310P3",
            software="CANN 5.1.RC2, ATC .om (nearest-upsampling export), ais_infer over the validation set",
            batch_size=1, note="om with nearest upsampling; same value at batch 16"),),
    ),),
))

# Shared by both networks of the bigmb repository (also zoo/unet_bigmb.py). pytorch_run.py:
# ToTensor then Normalize(0.5, 0.5) -> [-1, 1]; upstream runs the native size (a multiple of 16);
# segdeploy squashes to the 512² the seed guide uses.
BIGMB_PREPROCESS = Preprocess(size=(512, 512), interpolation="bilinear", resize_library="pil", scaling="div255",
                              mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), multiple_of=16)
BIGMB_DECODE = Decode(output_index=0, activation="sigmoid", threshold=0.5, resize_library="torch")
BIGMB_SOURCE = "bigmb/Unet-Segmentation-Pytorch-Nest-of-Unets @ f63262d, Models.py"

register_model(ModelSpec(
    name="unetpp_bigmb",
    title="UNet++ (bigmb NestedUNet, widths 64..1024) — 512²",
    task="binary",
    num_classes=1,
    builder=NestedUNet,
    builder_kwargs={"widths": (64, 128, 256, 512, 1024), "num_classes": 1, "upsample": "bilinear"},
    preprocess=BIGMB_PREPROCESS,
    decode=BIGMB_DECODE,
    input_size=(512, 512),
    source=BIGMB_SOURCE,
    license="MIT",
    manifest="nested_unet_bigmb.state_dict.json",
    output_names=("logits",),
    weights=(WeightsVariant(
        name="official",
        how_to_get="Upstream releases no weights (seed guide 001 uses random weights and compares "
        "against PyTorch by cosine similarity).",
        published=(PublishedMetric(
            "cosine", 1.0, "seed guide 001", hardware="Ascend 310P3",
            software="CANN 7.0.T3, Ascend-cann-torch-aie 7.0.T3, PyTorch 2.0.1 (sample.py, loop 100, warm-up 10)",
            batch_size=1, note="cosine similarity of the compiled model's output with PyTorch's, random weights"),),
    ),),
))
