"""The model registry: every seed model as data (no torch import here).

Facts come from ../shared/MODELS.md, which was read off the upstream repositories at the commits
named in each ``source``.
"""

from __future__ import annotations

from .specs import IMAGENET_MEAN, IMAGENET_STD, Decode, ModelSpec, Preprocess, WeightsInfo, register

_U2NET_PRE = Preprocess(
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
_U2NET_DEC = Decode(output_index=0, activation="none", normalize="minmax", resize_library="pil")
_U2NET_OUTPUTS = ("d0", "d1", "d2", "d3", "d4", "d5", "d6")
_U2NET_SOURCE = "xuebinqin/U-2-Net @ a179b4b, model/u2net.py"
_U2NET_NOTES = ("Known difference: upstream normalises a single-channel (grayscale) file with the red "
                "channel's mean/std on all three channels; segdeploy reads every image as RGB and uses "
                "per-channel statistics, so grayscale inputs differ slightly.")

register(
    ModelSpec(
        name="u2net",
        title="U²-Net (full, 44.0 M params) — salient object detection",
        task="saliency",
        num_classes=1,
        builder="segdeploy.models.u2net:u2net_full",
        builder_kwargs={},
        preprocess=_U2NET_PRE,
        decode=_U2NET_DEC,
        input_size=(320, 320),
        source=_U2NET_SOURCE,
        license="Apache-2.0",
        manifest="u2net.state_dict.json",
        output_names=_U2NET_OUTPUTS,
        notes=_U2NET_NOTES,
        weights=WeightsInfo(
            file_name="u2net.pth",
            url="https://drive.google.com/file/d/1ao1ovG1Qtx4b7EoskHXmi2E9rp5CHLcZ/view",
            how_to_get="Download u2net.pth (176.3 MB) from the Google Drive link in the U-2-Net README "
            "(xuebinqin/U-2-Net, 'Usage for salient object detection'), then pass --weights u2net.pth.",
            published={
                "ECSSD maxF (paper)": 0.951,
                "ECSSD MAE (paper)": 0.033,
                "ECSSD maxF (seed guide 000, Ascend 310P)": 0.948,
            },
        ),
    )
)

register(
    ModelSpec(
        name="u2netp",
        title="U²-Netp (small, 1.1 M params) — salient object detection",
        task="saliency",
        num_classes=1,
        builder="segdeploy.models.u2net:u2net_small",
        builder_kwargs={},
        preprocess=_U2NET_PRE,
        decode=_U2NET_DEC,
        input_size=(320, 320),
        source=_U2NET_SOURCE,
        license="Apache-2.0",
        manifest="u2netp.state_dict.json",
        output_names=_U2NET_OUTPUTS,
        notes=_U2NET_NOTES,
        weights=WeightsInfo(
            file_name="u2netp.pth",
            url="https://drive.google.com/file/d/1rbSTGKAE-MTxBYHd-51l2hMOQPT_7EPy/view",
            how_to_get="Download u2netp.pth (4.7 MB) from the Google Drive link in the U-2-Net README, "
            "then pass --weights u2netp.pth.",
            published={"ECSSD maxF (paper)": 0.923, "ECSSD MAE (paper)": 0.051},
        ),
    )
)

register(
    ModelSpec(
        name="unet_carvana",
        title="UNet (transposed-conv upsampling) — Carvana car masks",
        task="binary",
        num_classes=2,
        builder="segdeploy.models.unet:UNet",
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
        weights=WeightsInfo(
            file_name="unet_carvana_scale0.5_epoch2.pth",
            url="https://github.com/milesial/Pytorch-UNet/releases/download/v3.0/unet_carvana_scale0.5_epoch2.pth",
            how_to_get="Download unet_carvana_scale0.5_epoch2.pth from the v3.0 release of "
            "milesial/Pytorch-UNet, then pass --weights unet_carvana_scale0.5_epoch2.pth.",
            published={"Carvana Dice (seed guide 001)": 0.974},
        ),
    )
)

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
_DSB_DEC = Decode(output_index=0, activation="sigmoid", threshold=0.5, resize_library="torch")

register(
    ModelSpec(
        name="unetpp_dsb2018",
        title="UNet++ (4uiiurz1, bilinear upsampling) — DSB2018 nuclei 96²",
        task="binary",
        num_classes=1,
        builder="segdeploy.models.nested_unet:NestedUNet",
        builder_kwargs={"widths": (32, 64, 128, 256, 512), "num_classes": 1, "upsample": "bilinear"},
        preprocess=_DSB_PRE,
        decode=_DSB_DEC,
        input_size=(96, 96),
        source="4uiiurz1/pytorch-nested-unet @ 557ea02, archs.py",
        license="MIT",
        manifest="nested_unet_dsb.state_dict.json",
        output_names=("logits",),
        weights=WeightsInfo(
            file_name="model.pth",
            how_to_get="Upstream releases no weights: train with 4uiiurz1/pytorch-nested-unet "
            "(train.py --dataset dsb2018_96 --arch NestedUNet) and pass models/<name>/model.pth.",
            published={"DSB2018 96² IoU (upstream README)": 0.842},
        ),
    )
)

register(
    ModelSpec(
        name="unetpp_dsb2018_nearest",
        title="UNet++ (4uiiurz1 with nearest upsampling, Ascend-trained variant) — DSB2018 96²",
        task="binary",
        num_classes=1,
        builder="segdeploy.models.nested_unet:NestedUNet",
        builder_kwargs={"widths": (32, 64, 128, 256, 512), "num_classes": 1, "upsample": "nearest"},
        preprocess=_DSB_PRE,
        decode=_DSB_DEC,
        input_size=(96, 96),
        source="4uiiurz1/pytorch-nested-unet @ 557ea02 + Ascend nested_unet.diff (self.up mode='nearest')",
        license="MIT",
        manifest="nested_unet_dsb.state_dict.json",
        output_names=("logits",),
        weights=WeightsInfo(
            file_name="nested_unet.pth",
            how_to_get="The Ascend ModelZoo (ACL_PyTorch/contrib/cv/segmentation/Nested_UNet) ships "
            "nested_unet.pth; pass it with --weights.",
            published={"DSB2018 96² IoU (seed guide 002, Ascend 310P)": 0.8385},
        ),
    )
)

_BIGMB_PRE = Preprocess(
    # pytorch_run.py: ToTensor then Normalize(0.5, 0.5) -> [-1, 1]; no resize (native size,
    # multiple of 16). segdeploy squashes to the 512² the seed guide uses.
    size=(512, 512),
    interpolation="bilinear",
    resize_library="pil",
    scaling="div255",
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    multiple_of=16,
)
_BIGMB_SOURCE = "bigmb/Unet-Segmentation-Pytorch-Nest-of-Unets @ f63262d, Models.py"

register(
    ModelSpec(
        name="unetpp_bigmb",
        title="UNet++ (bigmb NestedUNet, widths 64..1024) — 512²",
        task="binary",
        num_classes=1,
        builder="segdeploy.models.nested_unet:NestedUNet",
        builder_kwargs={"widths": (64, 128, 256, 512, 1024), "num_classes": 1, "upsample": "bilinear"},
        preprocess=_BIGMB_PRE,
        decode=Decode(output_index=0, activation="sigmoid", threshold=0.5, resize_library="torch"),
        input_size=(512, 512),
        source=_BIGMB_SOURCE,
        license="MIT",
        manifest="nested_unet_bigmb.state_dict.json",
        output_names=("logits",),
        weights=WeightsInfo(
            how_to_get="Upstream releases no weights (seed guide 001 uses random weights and compares "
            "against PyTorch by cosine similarity).",
            published={"cosine similarity vs PyTorch (seed guide 001)": 1.0},
        ),
    )
)

register(
    ModelSpec(
        name="unet_bigmb",
        title="U-Net (bigmb U_Net, nearest upsampling + conv) — 512²",
        task="binary",
        num_classes=1,
        builder="segdeploy.models.unet_bigmb:BigmbUNet",
        builder_kwargs={"in_channels": 3, "num_classes": 1},
        preprocess=_BIGMB_PRE,
        decode=Decode(output_index=0, activation="sigmoid", threshold=0.5, resize_library="torch"),
        input_size=(512, 512),
        source=_BIGMB_SOURCE,
        license="MIT",
        manifest="unet_bigmb.state_dict.json",
        output_names=("logits",),
        weights=WeightsInfo(how_to_get="Upstream releases no weights."),
    )
)

register(
    ModelSpec(
        name="wseg_voc",
        title="1-stage wseg (SoftMaxAE on WideResNet38) — PASCAL VOC 2012, 21 classes",
        task="semantic",
        num_classes=21,
        builder="segdeploy.models.wseg:SoftMaxAE",
        builder_kwargs={"num_classes": 21},
        # infer_val.py: PIL RGB, (x/255 - mean)/std with ImageNet stats. Single view here; the
        # multi-scale + flip protocol belongs to evaluation (segdeploy.wseg_protocol).
        preprocess=Preprocess(scaling="div255", mean=IMAGENET_MEAN, std=IMAGENET_STD, multiple_of=8),
        # forward returns (cls [B,20], masks [B,21,H,W]); masks are softmax probabilities already.
        decode=Decode(output_index=1, activation="none", resize_library="torch"),
        input_size=(512, 512),
        source="visinf/1-stage-wseg @ cfe5784, configs/voc_resnet38.yaml (models/stage_net.py, "
        "models/backbones/resnet38d.py, models/mods/*)",
        license="Apache-2.0",
        manifest="wseg.state_dict.json",
        output_names=("cls", "masks"),
        weights=WeightsInfo(
            file_name="model_enc_e020Xs0.928.pth",
            url="https://download.visinf.tu-darmstadt.de/data/2020-cvpr-araslanov-1-stage-wseg/models/model_enc_e020Xs0.928.pth",
            how_to_get="Download model_enc_e020Xs0.928.pth (527 MB) from the link in the "
            "visinf/1-stage-wseg README, then pass --weights model_enc_e020Xs0.928.pth.",
            published={"VOC12 val mIoU, 21 classes, +CRF": 0.627, "VOC12 val mIoU, 21 classes": 0.597},
        ),
    )
)
