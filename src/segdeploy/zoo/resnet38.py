"""Wide ResNet-38 ("rna-a1", pre-activation) backbone of 1-stage-wseg.

Re-implemented from the facts of visinf/1-stage-wseg @ cfe5784, ``models/backbones/resnet38d.py``
(the Wu et al. 2016 "Wider or Deeper" model A1 used by PSA and 1-stage-wseg). All convolutions are
bias-free; every BatchNorm uses PyTorch defaults. Attribute names and registration order reproduce
upstream's state_dict keys and order exactly (``conv_branch1`` is registered last in each block).

Output stride is 8: three stride-2 stages (b2, b3, b4), then dilation 2 (b5) and 4 (b6, b7).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    """Pre-activation basic block: two 3x3 convolutions, widths ``in -> mid -> out``.

    ``a = relu(bn_branch2a(x))``; the shortcut is ``x`` when shapes agree, else
    ``conv_branch1(a)`` (1x1, strided: it sees the *activated* input, as upstream); the main
    branch is ``conv_branch2b1(relu(bn_branch2b1(conv_branch2a(a))))``.

    Args:
        first_dilation: dilation (= padding) of the first 3x3 conv; defaults to ``dilation``.
        dilation: dilation (= padding) of the second 3x3 conv.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int = 1,
                 first_dilation: int | None = None, dilation: int = 1) -> None:
        super().__init__()
        first_dilation = dilation if first_dilation is None else first_dilation
        self.same_shape = in_channels == out_channels and stride == 1
        self.bn_branch2a = nn.BatchNorm2d(in_channels)
        self.conv_branch2a = nn.Conv2d(in_channels, mid_channels, 3, stride, padding=first_dilation,
                                       dilation=first_dilation, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(mid_channels)
        self.conv_branch2b1 = nn.Conv2d(mid_channels, out_channels, 3, padding=dilation,
                                        dilation=dilation, bias=False)
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn_branch2a(x))
        shortcut = x if self.same_shape else self.conv_branch1(act)
        main = self.conv_branch2a(act)
        main = self.conv_branch2b1(F.relu(self.bn_branch2b1(main)))
        return shortcut + main


class BottleneckResBlock(nn.Module):
    """Pre-activation bottleneck ``1x1 (out/4) -> 3x3 dilated (out/2) -> 1x1 (out)`` (upstream
    ``ResBlock_bot``), with channel dropout after each inner ReLU.

    Upstream always projects the shortcut (``conv_branch1`` on the activated input); both uses
    (b6, b7) change the width, so the projection always exists.
    """

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if in_channels == out_channels:
            raise ValueError("BottleneckResBlock needs a width change (its shortcut is always a projection)")
        quarter, half = out_channels // 4, out_channels // 2
        self.bn_branch2a = nn.BatchNorm2d(in_channels)
        self.conv_branch2a = nn.Conv2d(in_channels, quarter, 1, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(quarter)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(quarter, half, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn_branch2b2 = nn.BatchNorm2d(half)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(half, out_channels, 1, bias=False)
        self.conv_branch1 = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn_branch2a(x))
        shortcut = self.conv_branch1(act)
        main = self.conv_branch2a(act)
        main = self.conv_branch2b1(self.dropout_2b1(F.relu(self.bn_branch2b1(main))))
        main = self.conv_branch2b2(self.dropout_2b2(F.relu(self.bn_branch2b2(main))))
        return shortcut + main


class ResNet38(nn.Module):
    """The backbone alone. :meth:`features` returns ``(conv3, conv6)``:

    - ``conv3``: raw output of block b3_2 (256 ch, stride 4; no BN/ReLU applied),
    - ``conv6``: ``relu(bn7(b7(...)))`` (4096 ch, stride 8).

    Sub-classes (``SoftMaxAE``) add their head modules after these, so the backbone keys come first
    in the state_dict and carry no prefix, as upstream.
    """

    out_channels = 4096

    def __init__(self) -> None:
        super().__init__()
        self.conv1a = nn.Conv2d(3, 64, 3, padding=1, bias=False)

        self.b2 = ResBlock(64, 128, 128, stride=2)
        self.b2_1 = ResBlock(128, 128, 128)
        self.b2_2 = ResBlock(128, 128, 128)

        self.b3 = ResBlock(128, 256, 256, stride=2)
        self.b3_1 = ResBlock(256, 256, 256)
        self.b3_2 = ResBlock(256, 256, 256)

        self.b4 = ResBlock(256, 512, 512, stride=2)
        self.b4_1 = ResBlock(512, 512, 512)
        self.b4_2 = ResBlock(512, 512, 512)
        self.b4_3 = ResBlock(512, 512, 512)
        self.b4_4 = ResBlock(512, 512, 512)
        self.b4_5 = ResBlock(512, 512, 512)

        self.b5 = ResBlock(512, 512, 1024, first_dilation=1, dilation=2)
        self.b5_1 = ResBlock(1024, 512, 1024, dilation=2)
        self.b5_2 = ResBlock(1024, 512, 1024, dilation=2)

        self.b6 = BottleneckResBlock(1024, 2048, dilation=4, dropout=0.3)
        self.b7 = BottleneckResBlock(2048, 4096, dilation=4, dropout=0.5)
        self.bn7 = nn.BatchNorm2d(4096)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(conv3, conv6)`` for an NCHW batch (see class docstring)."""
        x = self.conv1a(x)
        x = self.b2_2(self.b2_1(self.b2(x)))
        conv3 = self.b3_2(self.b3_1(self.b3(x)))
        x = self.b4(conv3)
        x = self.b4_5(self.b4_4(self.b4_3(self.b4_2(self.b4_1(x)))))
        x = self.b5_2(self.b5_1(self.b5(x)))
        x = self.b7(self.b6(x))
        return conv3, F.relu(self.bn7(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The stride-8, 4096-channel feature map ``conv6``."""
        return self.features(x)[1]
