"""TinySeg: a two-layer binary segmentation network, registered with segdeploy."""

import torch
from torch import nn

import segdeploy
from segdeploy import Decode, ModelSpec, Preprocess, WeightsVariant


class TinySeg(nn.Module):
    """conv 3x3 → BatchNorm → ReLU → conv 1x1: one foreground logit per pixel."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


segdeploy.register_model(ModelSpec(
    name="tinyseg",
    title="TinySeg — two-layer binary segmenter (plugin example)",
    task="binary",                       # saliency | binary | semantic
    num_classes=1,
    builder=TinySeg,
    builder_kwargs={"width": 8},
    # squash to 64x64, x/255, then (x - 0.5) / 0.5 per channel
    preprocess=Preprocess(size=(64, 64), scaling="div255", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    # sigmoid of the logit, resized back to the image, foreground where > 0.5
    decode=Decode(activation="sigmoid", threshold=0.5),
    input_size=(64, 64),
    output_names=("logits",),
    source="segdeploy README, 'Adding a model'",
    license="Apache-2.0",
    weights=(WeightsVariant(name="official", how_to_get="Train it yourself; pass the .pth with --weights."),),
))
