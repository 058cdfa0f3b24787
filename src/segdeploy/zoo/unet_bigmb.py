"""U-Net of bigmb/Unet-Segmentation-Pytorch-Nest-of-Unets @ f63262d (``Models.py`` ``U_Net``).

Facts from docs/models.md §4; keys equal ``U_Net(in_ch=3, out_ch=1)``'s:

* ``Conv1..Conv5``: ``conv`` = Sequential[3x3 conv (bias), BN, ReLU, 3x3 conv (bias), BN, ReLU]
  (parameters at indices 0, 1, 3, 4), widths 64-128-256-512-1024, 2x2 max-pool between them.
* ``Up5..Up2``: ``up`` = Sequential[x2 upsample with PyTorch's default **nearest** mode, 3x3 conv
  (bias), BN, ReLU] (parameters at indices 1, 2), halving the channels.
* ``Up_conv5..Up_conv2``: the same double conv on cat(skip, upsampled).
* ``Conv``: 1x1 conv (bias) to the logits; upstream's sigmoid is commented out.

H and W must be multiples of 16.
"""

from __future__ import annotations

from segdeploy.core.registry import register_model
from segdeploy.core.specs import ModelSpec, WeightsVariant

import torch
from torch import nn

from segdeploy.zoo.nested_unet import BIGMB_DECODE, BIGMB_PREPROCESS, BIGMB_SOURCE, check_multiple

WIDTHS = (64, 128, 256, 512, 1024)


class DoubleConvBias(nn.Module):
    """(3x3 conv with bias -> BN -> ReLU) twice, under ``conv.{0,1,3,4}``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class UpConv(nn.Module):
    """Nearest x2 upsample -> 3x3 conv (bias) -> BN -> ReLU, under ``up.{1,2}``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class BigmbUNet(nn.Module):
    """bigmb ``U_Net``.

    Args:
        in_channels: input channels.
        num_classes: output logit channels.

    Forward takes (N, in_channels, H, W), H and W multiples of 16, and returns (N, num_classes, H, W)
    logits.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 1) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        w = WIDTHS
        self.Conv1 = DoubleConvBias(in_channels, w[0])
        self.Conv2 = DoubleConvBias(w[0], w[1])
        self.Conv3 = DoubleConvBias(w[1], w[2])
        self.Conv4 = DoubleConvBias(w[2], w[3])
        self.Conv5 = DoubleConvBias(w[3], w[4])
        # Registration order Up5, Up_conv5, Up4, ... as upstream (it fixes the state_dict order).
        for level in (5, 4, 3, 2):
            cin, cout = w[level - 1], w[level - 2]
            self.add_module(f"Up{level}", UpConv(cin, cout))
            self.add_module(f"Up_conv{level}", DoubleConvBias(cin, cout))
        self.Conv = nn.Conv2d(w[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_multiple(x, 16, type(self).__name__)
        skips = [self.Conv1(x)]
        for encoder in (self.Conv2, self.Conv3, self.Conv4, self.Conv5):
            skips.append(encoder(self.pool(skips[-1])))
        y = skips.pop()
        for level in (5, 4, 3, 2):
            up = getattr(self, f"Up{level}")(y)
            y = getattr(self, f"Up_conv{level}")(torch.cat([skips.pop(), up], dim=1))
        return self.Conv(y)


# -- registry entry -----------------------------------------------------------------------------

register_model(ModelSpec(
    name="unet_bigmb",
    title="U-Net (bigmb U_Net, nearest upsampling + conv) — 512²",
    task="binary",
    num_classes=1,
    builder=BigmbUNet,
    builder_kwargs={"in_channels": 3, "num_classes": 1},
    # pytorch_run.py: the same input handling as the repository's NestedUNet
    preprocess=BIGMB_PREPROCESS,
    decode=BIGMB_DECODE,
    input_size=(512, 512),
    source=BIGMB_SOURCE,
    license="MIT",
    manifest="unet_bigmb.state_dict.json",
    output_names=("logits",),
    weights=(WeightsVariant(name="official", how_to_get="Upstream releases no weights."),),
))
