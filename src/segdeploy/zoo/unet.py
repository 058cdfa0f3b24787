"""U-Net with transposed-convolution upsampling, laid out like milesial/Pytorch-UNet v3.0.

Written from the architecture facts in docs/models.md §2 (no upstream code: that project is GPL-3.0).
The state_dict keys equal those of ``UNet(n_channels=3, n_classes=2, bilinear=False)`` at tag v3.0
(9a6ee84), so the released ``unet_carvana_scale0.5_epoch2.pth`` loads strictly:

* ``inc``, ``down1..down4`` and ``upK.conv`` are double 3x3 convolutions **without** bias, each followed
  by BatchNorm and ReLU (Sequential indices 0, 1, 3, 4 hold parameters: ``double_conv.{0,1,3,4}``).
* ``downK.maxpool_conv`` = [2x2 max-pool (floor), double conv].
* ``upK.up`` is a 2x2 stride-2 ConvTranspose2d **with** bias that halves the channels. Its output is
  zero-padded to the skip tensor's size (extra pixel right/bottom when the difference is odd) and
  concatenated as cat(skip, upsampled) before ``upK.conv``.
* ``outc.conv`` is a 1x1 convolution with bias; the network returns raw logits.
"""

from __future__ import annotations

from segdeploy.core.registry import register_model
from segdeploy.core.specs import Decode, ModelSpec, Preprocess, PublishedMetric, WeightsVariant, strip_module_prefix

import torch
import torch.nn.functional as F
from torch import nn


class DoubleConv(nn.Module):
    """(3x3 conv without bias -> BatchNorm -> ReLU) twice; parameters under ``double_conv.{0,1,3,4}``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for cin in (in_channels, out_channels):
            layers += [
                nn.Conv2d(cin, out_channels, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
        self.double_conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class Down(nn.Module):
    """2x2 max-pool (floor, so odd sizes lose their last row/column) then a :class:`DoubleConv`."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


def pad_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Zero-pad ``x`` (N, C, h, w) to ``ref``'s spatial size; an odd difference puts the extra pixel
    on the right/bottom (left = diff // 2, right = diff - diff // 2).

    The pads are computed from the tensors' shapes at run time, so an ONNX export with dynamic
    height/width keeps them symbolic instead of freezing the values of the traced input.
    """
    dy = ref.shape[-2] - x.shape[-2]
    dx = ref.shape[-1] - x.shape[-1]
    return F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])


class Up(nn.Module):
    """ConvTranspose2d(in, in/2, 2, stride 2) -> pad to the skip -> cat(skip, up) -> DoubleConv(in, out)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = pad_to(self.up(x), skip)
        return self.conv(torch.cat([skip, x], dim=1))


class OutConv(nn.Module):
    """1x1 convolution with bias to the class logits (key ``outc.conv``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class UNet(nn.Module):
    """milesial/Pytorch-UNet v3.0 U-Net (``bilinear=False``), widths 64-128-256-512-1024.

    Args:
        in_channels: input channels (3 for RGB).
        num_classes: output logit channels (2 for the Carvana checkpoints: background, car).

    Forward takes an (N, in_channels, H, W) float tensor, any H, W >= 16 (odd sizes are fine: the
    decoder pads to the skip sizes), and returns (N, num_classes, H, W) logits.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 2) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.inc = DoubleConv(in_channels, 64)
        self.down1 = Down(64, 128)
        self.down2 = Down(128, 256)
        self.down3 = Down(256, 512)
        self.down4 = Down(512, 1024)
        self.up1 = Up(1024, 512)
        self.up2 = Up(512, 256)
        self.up3 = Up(256, 128)
        self.up4 = Up(128, 64)
        self.outc = OutConv(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.inc(x)
        s2 = self.down1(s1)
        s3 = self.down2(s2)
        s4 = self.down3(s3)
        y = self.down4(s4)
        y = self.up1(y, s4)
        y = self.up2(y, s3)
        y = self.up3(y, s2)
        y = self.up4(y, s1)
        return self.outc(y)


# -- registry entries ---------------------------------------------------------------------------

def _milesial_checkpoint(state: dict) -> dict:
    """Checkpoints saved by Pytorch-UNet's HEAD train.py carry a ``mask_values`` list beside the
    tensors (absent from the v3.0 release asset); it is data for its predict.py, not a weight."""
    state = {key: value for key, value in state.items() if key != "mask_values"}
    return strip_module_prefix(state)


register_model(ModelSpec(
    name="unet_carvana",
    title="UNet (transposed-conv upsampling) — Carvana car masks",
    task="binary",
    num_classes=2,
    builder=UNet,
    builder_kwargs={"in_channels": 3, "num_classes": 2},
    # utils/data_loading.py BasicDataset.preprocess: PIL resize to (int(s*W), int(s*H)) BICUBIC, /255.
    preprocess=Preprocess(scale=0.5, interpolation="bicubic", resize_library="pil", scaling="div255"),
    # predict.py (HEAD): F.interpolate logits to (H, W), bilinear, then argmax over 2 classes.
    decode=Decode(output_index=0, activation="softmax", resize_library="torch"),
    input_size=(640, 959),
    source="milesial/Pytorch-UNet @ v3.0 (9a6ee84), unet/unet_model.py + unet/unet_parts.py",
    license="GPL-3.0 (upstream code; segdeploy re-implements it from facts, no code copied)",
    manifest="unet_carvana.state_dict.json",
    output_names=("logits",),
    checkpoint_filter=_milesial_checkpoint,
    # Native resolution at scale 0.5: a 12-megapixel photo would be a 6-megapixel input (≈7 GB of
    # activations); photos are reduced to Carvana's own 1918 px long side first.
    max_input_side=1918,
    weights=(WeightsVariant(
        name="official",
        file_name="unet_carvana_scale0.5_epoch2.pth",
        url="https://github.com/milesial/Pytorch-UNet/releases/download/v3.0/unet_carvana_scale0.5_epoch2.pth",
        licence="GPL-3.0",
        provenance="Trained by milesial on Carvana (scale 0.5, 2 epochs), release v3.0.",
        how_to_get="Download unet_carvana_scale0.5_epoch2.pth from the v3.0 release of milesial/Pytorch-UNet, "
        "then pass --weights unet_carvana_scale0.5_epoch2.pth.",
        published=(PublishedMetric(
            "dice", 0.974, "seed guide 001", dataset="carvana", hardware="Ascend 310P3",
            software="CANN 7.0.T3, Ascend-cann-torch-aie 7.0.T3, PyTorch 2.0.1 (sample.py, loop 100, warm-up 10)",
            batch_size=1, note="Dice of the Carvana scale-0.5 checkpoint (v3.0 release)"),),
    ),),
))
