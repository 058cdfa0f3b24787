"""The seed guides as data: what ``segdeploy run RECIPE`` reproduces, and what each guide published.

A :class:`Recipe` names a registry model, the dataset layout it is scored on, the headline metric,
the runtime matrix (backends x precisions x batch sizes) and the rows the seed guide printed about
*hardware*: throughput per device and batch size, and accuracy the guide measured on one device
(MagicMind's MSRA-B table). A model's own published accuracy lives in one place, its weight
variants in the registry (``spec.official.published``); :attr:`Recipe.published` adds those rows
for every model the recipe runs, so no number is written twice. Building the recipes imports
nothing heavy; ``segdeploy run --help`` lists recipes instantly (the registry, which imports torch,
is read only when ``published`` is).

Sources (``/work/shared/seeds``): 000 = U-2-Net on Ascend 310P (ais_bench, ECSSD);
001 = UNet (Carvana) and UNet++ (bigmb, random weights) on Ascend 310P3 (torch_aie);
002 = UNet++ DSB2018 on Ascend 310 / 310P3 and a T4 (TensorRT); 003 = U-2-Net on Cambricon
MLU370 S4 / X4 (MagicMind, MSRA-B); 004 = 1-stage wseg on Ascend 310P3 (VOC2012).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

ALL_PRECISIONS = ("fp32", "fp16", "bf16", "int8")


@dataclass(frozen=True)
class PublishedRow:
    """One number a seed guide (or the paper / upstream README it cites) published.

    Attributes:
        kind: "accuracy" (a metric value) or "throughput" (images per second).
        metric: the segdeploy metric key this row is compared with (``maxF``, ``MAE``, ``dice``,
            ``iou``, ``mIoU``, ``cosine``) or ``images_per_s`` for throughput.
        value: the published number, on segdeploy's scale (fractions, not percent), except where
            ``comparable`` is False (then it is copied as printed).
        source: which document printed it ("seed guide 000", "U-2-Net paper", ...).
        hardware: the device it was measured on, as the source names it.
        software: the stack it ran (compiler / runtime versions) as the source names it.
        batch_size: batch size of the row (None when the source gives none).
        precision: segdeploy precision name of the row (fp32 / fp16 / int8 ...) or None when the
            source does not state it; ``precision_label`` keeps the source's own wording.
        dataset: dataset layout name the accuracy was measured on (None for throughput rows).
        model: the registry model the row belongs to (None = any model of the recipe).
        comparable: False when the number cannot be compared with segdeploy's (another scale).
        note: anything a reader must know to interpret the row.
    """

    kind: str
    metric: str
    value: float
    source: str
    hardware: str
    software: str = ""
    batch_size: int | None = None
    precision: str | None = None
    precision_label: str = ""
    dataset: str | None = None
    model: str | None = None
    comparable: bool = True
    note: str = ""


@dataclass(frozen=True)
class Recipe:
    """One seed guide, end to end.

    Attributes:
        name: recipe name used on the command line (``u2net-ecssd``).
        title: one line for tables.
        guide: the seed guide(s) the recipe reproduces.
        model: registry model used by default.
        models: registry models ``--model`` may choose instead (same weights layout).
        dataset: dataset layout name (``segdeploy.data``) scored by the eval step; None = the guide
            has no dataset (UNet++ bigmb: cosine similarity against PyTorch only).
        datasets: other layouts ``--dataset`` may choose (e.g. MSRA-B for the MagicMind rows).
        dataset_options: reader options the guide implies (split names ...).
        headline: the metric key the guide reports first.
        metrics: metric keys shown in the accuracy table, headline first.
        higher_is_better: per metric key, whether larger is better (MAE: False).
        backends, precisions, batch_sizes: the runtime matrix on a GPU (the guide's batch sizes).
        cpu_precisions, cpu_batch_sizes: the modest defaults used on a CPU.
        input_size: (H, W) of the benchmark's synthetic input: the size the guide compiled for.
        compare_images: how many images the compare step feeds each configuration.
        fidelity: "masks" (mask agreement + tensor error vs PyTorch fp32) or "cosine" (the guide's
            cosine similarity against PyTorch; still reports the mask figures).
        default_weights: weights used when ``--weights`` is not given (None = required).
        guide_rows: the hardware rows the guide printed (throughput per device, per-device accuracy);
            :attr:`published` adds the models' own published accuracy from the registry.
        notes: facts a reader of the report must know.
    """

    name: str
    title: str
    guide: str
    model: str
    dataset: str | None
    headline: str
    metrics: tuple[str, ...]
    input_size: tuple[int, int]
    batch_sizes: tuple[int, ...]
    cpu_batch_sizes: tuple[int, ...]
    guide_rows: tuple[PublishedRow, ...]
    models: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    dataset_options: tuple[tuple[str, Any], ...] = ()
    higher_is_better: tuple[tuple[str, bool], ...] = ()
    backends: tuple[str, ...] = ()  # () = every registered backend, in registry order (the reference first)
    precisions: tuple[str, ...] = ("fp32", "fp16")
    cpu_precisions: tuple[str, ...] = ("fp32",)
    compare_images: int = 16
    fidelity: str = "masks"
    default_weights: str | None = None
    notes: tuple[str, ...] = ()

    def allowed_models(self) -> tuple[str, ...]:
        return (self.model,) + tuple(m for m in self.models if m != self.model)

    def allowed_datasets(self) -> tuple[str, ...]:
        if self.dataset is None:
            return ()
        return (self.dataset,) + tuple(d for d in self.datasets if d != self.dataset)

    def better(self, metric: str) -> bool:
        """True when a larger value of ``metric`` is better."""
        return dict(self.higher_is_better).get(metric, True)

    @property
    def published(self) -> tuple[PublishedRow, ...]:
        """Every published number of the recipe: the models' own (registry) then the guide's rows."""
        return registry_rows(self.allowed_models()) + self.guide_rows

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("guide_rows")
        data["published"] = [asdict(row) for row in self.published]
        data["dataset_options"] = dict(self.dataset_options)
        data["higher_is_better"] = dict(self.higher_is_better)
        data["input_size"] = list(self.input_size)
        return json.loads(json.dumps(data))  # tuples -> lists: the JSON form, for validation


def registry_rows(models: tuple[str, ...]) -> tuple[PublishedRow, ...]:
    """The accuracy numbers published for the official weights of ``models`` (from the registry)."""
    from segdeploy.core.registry import get_spec

    rows = []
    for model in models:
        for pub in get_spec(model).official.published:
            rows.append(PublishedRow("accuracy", pub.metric, pub.value, pub.source, pub.hardware, pub.software,
                                     batch_size=pub.batch_size, precision=pub.precision, dataset=pub.dataset,
                                     model=model, note=pub.note))
    return tuple(rows)


# --------------------------------------------------------------------------------------- U²-Net
_ASCEND_000 = "CANN 6.0.RC1, ATC .om (onnxsim + fix_onnx), ais_bench pure-inference loop 20"
_U2NET_ASCEND_TPUT = (
    (1, 240.978), (4, 208.310), (8, 202.463), (16, 198.603), (32, 197.363), (64, 199.131),
)
# MagicMind guide 003, table 5.1 (mm_run --iterations 1000). Quant modes as printed.
_MM_MODES = (("force_float32", "fp32"), ("force_float16", "fp16"), ("qint16_mixed_float32", None))
_MM_TPUT = {
    "MLU370 S4": ((34.5137, 54.8677, 58.3338), (64.6213, 121.846, 141.88), (53.3801, 86.3547, 96.3341)),
    "MLU370 X4": ((37.7032, 68.5801, 77.643), (69.3775, 141.702, 174.42), (56.8866, 97.7327, 111.602)),
}
# Table 5.2: "average mae / max fmeasure" on MSRA-B, printed on a scale that is not segdeploy's
# (METRICS.md: "do not copy its formula"). Kept verbatim, marked not comparable.
_MM_ACC = {
    "MLU370 S4": (("force_float32", 8.7251, 4.2186), ("force_float16", 8.7322, 4.2187),
                  ("qint16_mixed_float32", 8.7088, 4.2185)),
    "MLU370 X4": (("force_float32", 8.7251, 4.2186), ("force_float16", 8.7322, 4.2187),
                  ("qint8_mixed_float16", 8.7088, 4.2185)),
}
_MM_PRECISION = {"force_float32": "fp32", "force_float16": "fp16"}
_MM_SOFTWARE = "MagicMind >= 0.13.0, mm_run --threads 1 --iterations 1000"
_MM_NOTE_ACC = ("printed as 'average mae / max fmeasure' on another scale (METRICS.md); not comparable "
                "with segdeploy's MAE in [0, 1] and maxF in [0, 1]")


def _u2net_rows() -> tuple[PublishedRow, ...]:
    rows: list[PublishedRow] = [PublishedRow("throughput", "images_per_s", value, "seed guide 000", "Ascend 310P", _ASCEND_000,
                          batch_size=bs, precision_label="ATC defaults (not stated)", model="u2net")
             for bs, value in _U2NET_ASCEND_TPUT]
    for hardware, table in _MM_TPUT.items():
        for (label, precision), values in zip(_MM_MODES, table):
            for bs, value in zip((1, 4, 8), values):
                rows.append(PublishedRow(
                    "throughput", "images_per_s", value, "seed guide 003 (MagicMind)", hardware, _MM_SOFTWARE,
                    batch_size=bs, precision=precision, precision_label=label, model="u2net",
                    note="" if precision else "int16 quantised weights, fp32 compute: no segdeploy equivalent"))
    for hardware, table in _MM_ACC.items():
        for label, mae, maxf in table:
            for metric, value in (("MAE", mae), ("maxF", maxf)):
                rows.append(PublishedRow(
                    "accuracy", metric, value, "seed guide 003 (MagicMind)", hardware, _MM_SOFTWARE, batch_size=1,
                    precision=_MM_PRECISION.get(label), precision_label=label, dataset="msra-b", model="u2net",
                    comparable=False, note=_MM_NOTE_ACC))
    return tuple(rows)


_SAL_METRICS = ("maxF", "MAE", "meanF", "adpF", "Sm", "maxEm", "wFm")

U2NET_ECSSD = Recipe(
    name="u2net-ecssd",
    title="U²-Net salient object detection on ECSSD (seed guides 000 and 003)",
    guide="000 (Ascend 310P, ECSSD) and 003 (Cambricon MLU370 MagicMind, MSRA-B)",
    model="u2net",
    models=("u2netp",),
    dataset="ecssd",
    datasets=("msra-b", "duts-te", "hku-is", "pascal-s", "dut-omron", "pairs"),
    headline="maxF",
    metrics=_SAL_METRICS,
    higher_is_better=(("MAE", False),),
    input_size=(320, 320),
    batch_sizes=(1, 4, 8, 16, 32, 64),
    cpu_batch_sizes=(1, 4),
    guide_rows=_u2net_rows(),
    notes=(
        "Guide 000 compiles one .om per batch size with ATC and times ais_bench's pure-inference loop "
        "(20 loops); accuracy is maxF and MAE on the 1,000 ECSSD images.",
        "Guide 003 reports throughput per MagicMind quantisation mode on MLU370 S4 / X4 at batch 1, 4 "
        "and 8; its MSRA-B accuracy is printed on a scale that segdeploy does not reproduce.",
        "--model u2netp runs the same recipe with U²-Netp (1.1 M parameters, u2netp.pth); every published "
        "row is U²-Net's, so they are shown beside U²-Netp's numbers but not compared.",
    ),
)

# ----------------------------------------------------------------------------------- UNet Carvana
_AIE_001 = "CANN 7.0.T3, Ascend-cann-torch-aie 7.0.T3, PyTorch 2.0.1 (sample.py, loop 100, warm-up 10)"

UNET_CARVANA = Recipe(
    name="unet-carvana",
    title="UNet (milesial, scale 0.5 checkpoint) on Carvana (seed guide 001)",
    guide="001 (Ascend 310P3, torch_aie)",
    model="unet_carvana",
    dataset="carvana",
    headline="dice",
    metrics=("dice", "dice_pooled", "iou", "iou_pooled"),
    input_size=(512, 512),
    batch_sizes=(1, 4, 8, 16),
    cpu_batch_sizes=(1,),
    compare_images=16,
    guide_rows=(
        PublishedRow("throughput", "images_per_s", 50.968, "seed guide 001", "Ascend 310P3", _AIE_001,
                     batch_size=1, precision_label="torch_aie defaults (not stated)",
                     note="input 1x3x512x512"),
    ),
    notes=(
        "The guide benchmarks a 512x512 input; evaluation uses the checkpoint's own preprocessing "
        "(PIL bicubic to half the native 1918x1280 size) and scores at the native size.",
        "The guide scores every pair of its test/images + test/masks folder, so the recipe scores every "
        "pair under --data-root; --dataset-opt split=val takes milesial's 10 % validation split instead.",
    ),
)

# ------------------------------------------------------------------------------------ UNet++ bigmb
UNETPP_BIGMB = Recipe(
    name="unetpp-bigmb",
    title="UNet++ (bigmb NestedUNet, widths 64..1024) with random weights (seed guide 001)",
    guide="001 (Ascend 310P3, torch_aie)",
    model="unetpp_bigmb",
    models=("unet_bigmb",),
    dataset=None,
    headline="cosine",
    metrics=("cosine",),
    input_size=(512, 512),
    batch_sizes=(1, 4, 8),
    cpu_batch_sizes=(1,),
    compare_images=16,
    fidelity="cosine",
    default_weights="random",
    guide_rows=(
        PublishedRow("throughput", "images_per_s", 25.008, "seed guide 001", "Ascend 310P3", _AIE_001,
                     batch_size=1, precision_label="torch_aie defaults (not stated)",
                     note="input 1x3x512x512"),
    ),
    notes=(
        "Upstream releases no weights: the guide (and this recipe) use random weights and measure the "
        "cosine similarity of each runtime's output with PyTorch fp32. There is no dataset step.",
    ),
)

# ---------------------------------------------------------------------------------- UNet++ DSB2018
_ATC_002 = "CANN 5.1.RC2, ATC .om (nearest-upsampling export), ais_infer over the validation set"
_T4_002 = "TensorRT 7.2.3.4, CUDA 11.0, cuDNN 8.2"
_DSB_TPUT = {
    # 7.3 table: 310, 310P3, T4 per batch size.
    1: (1674.950432, 1681.600281, 320.5865223),
    4: (1868.409806, 2495.595994, 400.8416683),
    8: (1845.83697, 1907.807965, 458.3922516),
    16: (1757.895362, 1852.471243, 549.9608379),
    32: (1724.390615, 1796.602154, 568.2170006),
}


def _dsb_rows() -> tuple[PublishedRow, ...]:
    rows = []
    for bs, (a310, a310p, t4) in _DSB_TPUT.items():
        rows.append(PublishedRow("throughput", "images_per_s", a310, "seed guide 002", "Ascend 310", _ATC_002,
                                 batch_size=bs, precision_label="ATC defaults (not stated)"))
        rows.append(PublishedRow("throughput", "images_per_s", a310p, "seed guide 002", "Ascend 310P3",
                                 _ATC_002, batch_size=bs, precision_label="ATC defaults (not stated)",
                                 note="after AOE tuning" if bs == 4 else ""))
        rows.append(PublishedRow("throughput", "images_per_s", t4, "seed guide 002", "NVIDIA T4", _T4_002,
                                 batch_size=bs, precision_label="TensorRT (not stated)"))
    return tuple(rows)


UNETPP_DSB2018 = Recipe(
    name="unetpp-dsb2018",
    title="UNet++ (4uiiurz1) on DSB2018 nuclei 96x96 (seed guide 002)",
    guide="002 (Ascend 310 / 310P3, NVIDIA T4)",
    # The guide patches upsampling to nearest before export (nested_unet.diff) and measures that
    # network: 0.8385 IoU. The bilinear original (--model unetpp_dsb2018) is upstream's 0.842.
    model="unetpp_dsb2018_nearest",
    models=("unetpp_dsb2018",),
    dataset="dsb2018",
    dataset_options=(("split", "val"),),
    headline="iou",
    metrics=("iou", "iou_pooled", "dice", "dice_pooled"),
    input_size=(96, 96),
    batch_sizes=(1, 4, 8, 16, 32),
    cpu_batch_sizes=(1, 16),
    compare_images=16,
    guide_rows=_dsb_rows(),
    notes=(
        "Default model unetpp_dsb2018_nearest: the guide changes UNet++'s bilinear upsampling to nearest "
        "(nested_unet.diff) before exporting, and its 0.8385 IoU is that network's. --model "
        "unetpp_dsb2018 runs upstream's bilinear network (README: 0.842). Both load the same checkpoint.",
        "The validation split is upstream's train_test_split(test_size=0.2, random_state=41), or the "
        "val_ids.txt of a prepared root (the guide's fixed list).",
    ),
)

# ------------------------------------------------------------------------------------------- wseg
_ATC_004 = "CANN 6.0.RC1, ATC .om, ais_bench (pure-inference loop 50)"

WSEG_VOC = Recipe(
    name="wseg-voc",
    title="1-stage wseg (SoftMaxAE, WideResNet38) on PASCAL VOC 2012 val (seed guide 004)",
    guide="004 (Ascend 310P3)",
    model="wseg_voc",
    dataset="voc2012",
    dataset_options=(("split", "val"),),
    headline="mIoU",
    metrics=("mIoU", "mIoU_fg", "pixel_accuracy"),
    input_size=(1024, 1024),
    batch_sizes=(1, 4, 8, 16),
    cpu_batch_sizes=(1,),
    compare_images=16,
    guide_rows=(
        *(PublishedRow("throughput", "images_per_s", value, "seed guide 004", "Ascend 310P3", _ATC_004,
                       batch_size=bs, precision_label="ATC defaults (not stated)", note="input bsx3x1024x1024")
          for bs, value in ((1, 5.26), (4, 3.68), (8, 2.29), (16, 2.28))),
    ),
    notes=(
        "Evaluation follows upstream's test protocol (scales 1, 0.5, 1.5, 2 with flips, merged, dense "
        "CRF): about 8 forward passes of up to 2048x2048 per image. On a CPU use --limit.",
        "The benchmark times one 1024x1024 view, the shape the guide compiles.",
    ),
)

RECIPES: dict[str, Recipe] = {r.name: r for r in (U2NET_ECSSD, UNET_CARVANA, UNETPP_BIGMB, UNETPP_DSB2018, WSEG_VOC)}


def list_recipes() -> list[str]:
    """Recipe names in the seed guides' order."""
    return list(RECIPES)


def get_recipe(name: str | Recipe) -> Recipe:
    """Look a recipe up by name (``_`` and ``-`` are interchangeable); KeyError lists the known ones."""
    if isinstance(name, Recipe):
        return name
    key = name.strip().lower().replace("_", "-")
    if key in RECIPES:
        return RECIPES[key]
    import difflib

    close = difflib.get_close_matches(key, RECIPES, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    from segdeploy.core.errors import ModelNotFound

    raise ModelNotFound(f"unknown recipe {name!r}.{hint} Known recipes: {', '.join(RECIPES)}")


@dataclass(frozen=True)
class RunOptions:
    """A recipe resolved against the command line: exactly what one ``segdeploy run`` does.

    ``backends`` x ``precisions`` is the runtime matrix; the first configuration that opens is the
    reference of the compare step only if it is torch fp32 (else the reference is opened apart).
    """

    recipe: str
    model: str
    weights: str
    dataset: str | None
    data_root: str | None
    device: str
    backends: tuple[str, ...]
    precisions: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    input_size: tuple[int, int]
    limit: int | None = None
    dataset_options: tuple[tuple[str, Any], ...] = ()
    eval_on: str = "auto"
    compare_images: int = 16
    bench_warmup: int = 2
    bench_iters: int = 5
    seed: int = 0
    protocol: str | None = None
    extra: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["dataset_options"] = dict(self.dataset_options)
        data["extra"] = dict(self.extra)
        return json.loads(json.dumps(data))
