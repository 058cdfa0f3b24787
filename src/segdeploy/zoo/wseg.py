"""1-stage-wseg (Araslanov & Roth, CVPR 2020): ``SoftMaxAE`` on Wide ResNet-38, VOC config.

Re-implemented from the facts of visinf/1-stage-wseg @ cfe5784: ``models/stage_net.py``
(``network_factory`` -> ``SoftMaxAE``), ``models/mods/{aspp,gci,sg,pamr}.py`` and
``configs/voc_resnet38.yaml`` (SG_PSI 0.3, FOCAL_P 3, FOCAL_LAMBDA 0.01, PAMR_ITER 10, PAMR_KERNEL
[1, 2, 4, 8, 12, 24]). The state_dict (309 tensors, 137,973,172 parameters) equals upstream's in keys,
shapes, dtypes and order, so the published ``model_enc_e020Xs0.928.pth`` loads strictly.

Only the inference path is reproduced in :meth:`SoftMaxAE.forward` (upstream ``forward(y)`` with no
``y_raw``/``labels``). The training-only parts (pseudo ground truth from PAMR, the balanced mask loss,
BatchNorm freezing) are not; :class:`PAMR` is kept as a working module because its three constant
shift kernels are buffers in the checkpoint.
"""

from __future__ import annotations

from segdeploy.core.registry import register_model
from segdeploy.core.specs import IMAGENET_MEAN, IMAGENET_STD, Decode, ModelSpec, Preprocess, PublishedMetric, WeightsVariant

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segdeploy.zoo.resnet38 import ResNet38

# The 3x3 taps in raster order; the 8-neighbourhood is the same order without the centre (1, 1).
_TAPS = [(row, col) for row in range(3) for col in range(3)]
_NEIGHBOURS = [tap for tap in _TAPS if tap != (1, 1)]


def _conv_bn_relu(cin: int, cout: int, kernel: int, padding: int = 0, dilation: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU()]


class ASPPBranch(nn.Module):
    """``relu(bn(atrous_conv(x)))`` with a bias-free conv (upstream ``_ASPPModule``)."""

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int) -> None:
        super().__init__()
        padding = 0 if kernel == 1 else dilation
        self.atrous_conv = nn.Conv2d(cin, cout, kernel, padding=padding, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.atrous_conv(x)))


class ASPP(nn.Module):
    """DeepLab-v3+ style ASPP for output stride 8: dilations 1 (1x1), 12, 24, 36 (3x3), plus an
    image-level branch; the five 256-ch maps are concatenated (1280 ch) and fused by a 1x1 conv.

    The image-level branch is upsampled from 1x1 upstream with bilinear, ``align_corners=True``,
    which copies the single value exactly, so a broadcast (``expand``) gives identical numbers and
    exports to ONNX without a Resize node.
    """

    def __init__(self, cin: int = 4096, width: int = 256, dilations: Sequence[int] = (1, 12, 24, 36)) -> None:
        super().__init__()
        self.aspp1 = ASPPBranch(cin, width, 1, dilations[0])
        self.aspp2 = ASPPBranch(cin, width, 3, dilations[1])
        self.aspp3 = ASPPBranch(cin, width, 3, dilations[2])
        self.aspp4 = ASPPBranch(cin, width, 3, dilations[3])
        self.global_avg_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(cin, width, 1))
        self.conv1 = nn.Conv2d(5 * width, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.aspp1(x)
        pooled = self.global_avg_pool(x).expand_as(x1)
        x = torch.cat((x1, self.aspp2(x), self.aspp3(x), self.aspp4(x), pooled), dim=1)
        return self.dropout(self.relu(self.bn1(self.conv1(x))))


class GCI(nn.Module):
    """Global Cue Injection: AdaIN-like modulation of shallow features by deep ones.

    ``attrs = max_hw(fc_deep(deep))`` (2*C values per image: gamma = first C, beta = last C);
    ``out = fc_cls(relu(fc_skip(shallow) * (gamma + 1) + beta))``. ``fc_skip`` ends in a BatchNorm
    *without* affine parameters (its state holds running statistics only).
    """

    def __init__(self, channels: int = 256) -> None:
        super().__init__()
        self.fc_deep = nn.Sequential(*_conv_bn_relu(channels, 2 * channels, 1))
        self.fc_skip = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False),
                                     nn.BatchNorm2d(channels, affine=False))
        self.fc_cls = nn.Sequential(*_conv_bn_relu(channels, channels, 1))

    def forward(self, shallow: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        # amax over H, W: the global max, exported as ReduceMax (no reshape with data-dependent sizes).
        attrs = self.fc_deep(deep).amax(dim=(2, 3), keepdim=True)
        gamma, beta = attrs.chunk(2, dim=1)
        x = F.relu(self.fc_skip(shallow) * (gamma + 1) + beta)
        return self.fc_cls(x)


class StochasticGate(nn.Module):
    """Mixes deep (``x1``) and shallow (``x2``) features with rate ``psi``.

    Eval: ``(1 - psi) * x1 + psi * x2``. Train (upstream ``models/mods/sg.py``): a per-element
    Bernoulli gate keeps the shifted deep feature ``(x1 - psi * x2) / (1 - psi)`` with probability
    ``1 - psi`` and the shallow feature otherwise, so that the expectation equals ``x1``.
    """

    def __init__(self, psi: float = 0.3) -> None:
        super().__init__()
        self.psi = psi

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        psi = self.psi
        if not self.training:
            return (1 - psi) * x1 + psi * x2
        gate = (torch.rand_like(x1) >= psi).to(x1.dtype)
        shifted = (x1 - psi * x2) / max(1e-8, 1 - psi)
        return gate * shifted + (1 - gate) * x2


def pamr_kernel(kind: str) -> torch.Tensor:
    """The constant 3x3 kernels of PAMR's local-affinity convolutions (upstream ``mods/pamr.py``).

    - ``"abs"`` (buffer ``_aff.aff_x.kernel``, 8x1x3x3): centre +1, one neighbour -1, i.e. the
      difference between a pixel and each of its 8 neighbours;
    - ``"copy"`` (``_aff.aff_m.kernel``, 8x1x3x3): +1 at one neighbour, i.e. the neighbour's value;
    - ``"std"`` (``_aff.aff_std.kernel``, 9x1x3x3): +1 at each of the 9 taps including the centre.

    Neighbours are in raster order (top-left, top, top-right, left, right, bottom-left, ...).
    """
    taps = _TAPS if kind == "std" else _NEIGHBOURS
    kernel = torch.zeros(len(taps), 1, 3, 3)
    for index, (row, col) in enumerate(taps):
        if kind == "abs":
            kernel[index, 0, 1, 1] = 1.0
            kernel[index, 0, row, col] = -1.0
        elif kind in ("copy", "std"):
            kernel[index, 0, row, col] = 1.0
        else:
            raise ValueError(f"unknown PAMR kernel kind {kind!r} (expected 'abs', 'copy' or 'std')")
    return kernel


class LocalShift(nn.Module):
    """Applies a constant 3x3 kernel bank to every channel at several dilations, with replicate
    padding. Input (B, K, H, W) -> (B, K, P, H, W) with P = kernels x dilations (dilation-major)."""

    def __init__(self, kind: str, dilations: Sequence[int]) -> None:
        super().__init__()
        self.kind = kind
        self.dilations = tuple(int(d) for d in dilations)
        self.register_buffer("kernel", pamr_kernel(kind))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, k, h, w = x.shape
        flat = x.reshape(b * k, 1, h, w)
        kernel = self.kernel.to(x.dtype)
        shifted = [F.conv2d(F.pad(flat, [d] * 4, mode="replicate"), kernel, dilation=d)
                   for d in self.dilations]
        out = torch.cat(shifted, dim=1).reshape(b, k, -1, h, w)
        return out.abs() if self.kind == "abs" else out


class PAMR(nn.Module):
    """Pixel-Adaptive Mask Refinement (training-time pseudo-label refinement; not used at inference).

    For image ``x`` (B, K, H, W) and masks (B, C, h, w) resized to (H, W) (bilinear,
    align_corners=True): ``sigma = std`` of the 9 x len(dilations) local samples per pixel and
    channel (unbiased), affinity ``a_p = mean_K(-|x - x_p| / (1e-8 + 0.1 sigma))`` for the
    8 x len(dilations) neighbours p, softmax over p; then ``num_iter`` times
    ``mask <- sum_p a_p * mask_p``.
    """

    def __init__(self, num_iter: int = 10, dilations: Sequence[int] = (1, 2, 4, 8, 12, 24)) -> None:
        super().__init__()
        self.num_iter = num_iter
        self.aff_x = LocalShift("abs", dilations)
        self.aff_m = LocalShift("copy", dilations)
        self.aff_std = LocalShift("std", dilations)

    def check_kernels(self) -> None:
        """Raise ValueError if a loaded state_dict changed the constant kernels (upstream asserts)."""
        for name in ("aff_x", "aff_m", "aff_std"):
            shift = getattr(self, name)
            if not torch.equal(shift.kernel.cpu(), pamr_kernel(shift.kind)):
                raise ValueError(f"PAMR buffer _aff.{name}.kernel does not hold the constant "
                                 f"{shift.kind!r} shift kernel; the checkpoint is not a 1-stage-wseg one")

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.check_kernels()
        mask = F.interpolate(mask, size=x.shape[-2:], mode="bilinear", align_corners=True)
        sigma = self.aff_std(x).std(dim=2, keepdim=True)
        aff = (-self.aff_x(x) / (1e-8 + 0.1 * sigma)).mean(dim=1, keepdim=True)
        aff = F.softmax(aff, dim=2)
        for _ in range(self.num_iter):
            mask = (self.aff_m(mask) * aff).sum(dim=2)
        return mask


class SoftMaxAE(ResNet38):
    """The 1-stage-wseg segmentation network (upstream ``SoftMaxAE`` with the ResNet38 backbone).

    ``forward(x)`` for a normalised NCHW batch returns ``(cls, masks)``:

    - ``masks`` [B, num_classes, H, W]: softmax over ``cat(1.0, logits)`` (a constant background
      logit of 1 in front of the ``num_classes - 1`` foreground logits) at stride 4, bilinearly
      upsampled (align_corners=True) to the input size. Channel 0 is background.
    - ``cls`` [B, num_classes - 1]: per-class scores from the stride-4 maps (before upsampling),
      ``sum_hw(z m) / (1 + sum_hw m) + (1 - mean_hw m)^p log(lambda + mean_hw m)`` for logits z and
      masks m, background dropped (p = ``focal_p``, lambda = ``focal_lambda``).

    Args:
        num_classes: classes including background (VOC: 21).
        sg_psi: stochastic-gate rate (config SG_PSI).
        focal_p, focal_lambda: focal-penalty exponent and offset (FOCAL_P, FOCAL_LAMBDA).
        pamr_iter, pamr_dilations: PAMR settings (PAMR_ITER, PAMR_KERNEL); PAMR is training-only.
    """

    def __init__(self, num_classes: int = 21, sg_psi: float = 0.3, focal_p: float = 3,
                 focal_lambda: float = 0.01, pamr_iter: int = 10,
                 pamr_dilations: Sequence[int] = (1, 2, 4, 8, 12, 24)) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.focal_p = focal_p
        self.focal_lambda = focal_lambda
        # Registration order below is upstream's state_dict order (aspp, _aff, shallow_mask, ...).
        self.aspp = ASPP(self.out_channels, 256, (1, 12, 24, 36))
        self._aff = PAMR(pamr_iter, pamr_dilations)
        self.shallow_mask = GCI(256)
        self.sg = StochasticGate(sg_psi)
        self.fc8_skip = nn.Sequential(*_conv_bn_relu(256, 48, 1))
        self.fc8_x = nn.Sequential(*_conv_bn_relu(304, 256, 3, padding=1))
        self.last_conv = nn.Sequential(
            *_conv_bn_relu(256, 256, 3, padding=1), nn.Dropout(0.5),
            *_conv_bn_relu(256, 256, 3, padding=1), nn.Dropout(0.1),
            nn.Conv2d(256, num_classes - 1, 1, bias=True),
        )

    def mask_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Stride-4 logits [B, num_classes, H/4, W/4] with the constant background logit 1.0 first."""
        conv3, conv6 = self.features(x)
        skip = self.fc8_skip(conv3)
        deep = F.interpolate(self.aspp(conv6), size=skip.shape[-2:], mode="bilinear", align_corners=True)
        deep = self.fc8_x(torch.cat([deep, skip], dim=1))
        fused = self.sg(deep, self.shallow_mask(conv3, deep))
        fg = self.last_conv(fused)
        return torch.cat([torch.ones_like(fg[:, :1]), fg], dim=1)

    def class_scores(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Normalised global weighted pooling + focal penalty (see class docstring), foreground only."""
        z = logits.flatten(2)
        m = masks.flatten(2)
        pooled = (z * m).sum(-1) / (1.0 + m.sum(-1))
        area = m.mean(-1)
        penalty = torch.pow(1 - area, self.focal_p) * torch.log(self.focal_lambda + area)
        return (pooled + penalty)[:, 1:]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.mask_logits(x)
        masks = F.softmax(logits, dim=1)
        cls = self.class_scores(logits, masks)
        masks = F.interpolate(masks, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return cls, masks

    def refine_masks(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """PAMR-refined masks at ``masks``' size (upstream ``run_pamr``): ``image`` (the raw,
        unnormalised image batch) is first resized to the masks' size (bilinear, align_corners=True)."""
        image = F.interpolate(image, size=masks.shape[-2:], mode="bilinear", align_corners=True)
        return self._aff(image, masks)


# -- registry entry -----------------------------------------------------------------------------

register_model(ModelSpec(
    name="wseg_voc",
    title="1-stage wseg (SoftMaxAE on WideResNet38) — PASCAL VOC 2012, 21 classes",
    task="semantic",
    num_classes=21,
    builder=SoftMaxAE,
    builder_kwargs={"num_classes": 21},
    # infer_val.py: PIL RGB, (x/255 - mean)/std with ImageNet stats. Single view in the pipeline;
    # evaluation runs the multi-scale + flip + CRF protocol below.
    preprocess=Preprocess(scaling="div255", mean=IMAGENET_MEAN, std=IMAGENET_STD, multiple_of=8),
    # forward returns (cls [B,20], masks [B,21,H,W]); masks are softmax probabilities already.
    decode=Decode(output_index=1, activation="none", resize_library="torch"),
    input_size=(512, 512),
    source="visinf/1-stage-wseg @ cfe5784, configs/voc_resnet38.yaml (models/stage_net.py, "
    "models/backbones/resnet38d.py, models/mods/*)",
    license="Apache-2.0",
    manifest="wseg.state_dict.json",
    output_names=("cls", "masks"),
    protocol="segdeploy.zoo.wseg_protocol:MultiScaleProtocol",
    # The protocol's own largest view: 512 px sides (its scale 2 fills the 1024² canvas). A 12-MP
    # photo at native resolution would need ≈62 TFLOP and >18 GB.
    max_input_side=512,
    weights=(WeightsVariant(
        name="official",
        file_name="model_enc_e020Xs0.928.pth",
        url="https://download.visinf.tu-darmstadt.de/data/2020-cvpr-araslanov-1-stage-wseg/models/model_enc_e020Xs0.928.pth",
        licence="Apache-2.0",
        provenance="Trained by Araslanov & Roth (CVPR 2020) on VOC 2012 + SBD with image-level labels.",
        how_to_get="Download model_enc_e020Xs0.928.pth (527 MB) from the visinf/1-stage-wseg README, "
        "then pass --weights model_enc_e020Xs0.928.pth.",
        published=(
            PublishedMetric("mIoU", 0.6274, "seed guide 004", dataset="voc2012", hardware="Ascend 310P3",
                            software="CANN 6.0.RC1, ATC .om, ais_bench (pure-inference loop 50)", batch_size=1,
                            note="multi-scale + flip + dense CRF protocol, 21 classes"),
            PublishedMetric("mIoU", 0.627, "visinf/1-stage-wseg README", dataset="voc2012",
                            software="upstream PyTorch", note="with CRF, 21 classes"),
            PublishedMetric("mIoU", 0.597, "visinf/1-stage-wseg README", dataset="voc2012",
                            software="upstream PyTorch",
                            note="without CRF, 21 classes (segdeploy run --protocol multiscale)"),
        ),
    ),),
))
