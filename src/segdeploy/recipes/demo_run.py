"""``segdeploy demo``: the trained U²-Netp on the bundled photographs, every backend and precision
verified against PyTorch fp32, timed, and the fastest passing configuration's cut-outs written.

What runs (:func:`demo_options`): the U²-Net recipe with ``u2netp``, its packaged official weights
(``segdeploy/assets/weights/u2netp_official.safetensors``), on the CPU, backends torch /
onnxruntime / openvino x precisions fp32 / bf16 / int8. The compare step feeds the bundled
photographs (``segdeploy/assets/photos``, credits in ``photos.json`` and ``CREDITS.md``); int8 is
calibrated on synthetic photo-like images, never on the photographs it is judged on. There is no
accuracy step: the photographs have no ground-truth masks. The benchmark uses the documented CPU
defaults of ``segdeploy run``: 1 warm-up and 5 timed calls per batch size, after the runtime's
own warm-up.

Fallbacks, each said in the report and on the console: without the packaged weights the demo
runs deterministic random weights (cut-outs are then meaningless); without the photographs it
uses generated photo-like images (:mod:`segdeploy.recipes.demo`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

DEMO_RECIPE = "u2net-ecssd"
DEMO_MODEL = "u2netp"
DEMO_SEED = 0
DEMO_BACKENDS = ("torch", "onnxruntime", "openvino")
DEMO_PRECISIONS = ("fp32", "bf16", "int8")
DEMO_BATCH_SIZES = (1, 2)
#: the documented CPU defaults of ``segdeploy run`` (docs/run.md)
DEMO_BENCH_WARMUP = 1
DEMO_BENCH_ITERS = 5
#: generated images used when the photographs are not installed
DEMO_GENERATED_IMAGES = 6
#: Configurations the demo does not run, and why (recorded as "not run" with the reason).
DEMO_EXCLUDE = (
    ("torch", "bf16", "not run by the demo: PyTorch's CPU bf16 path (autocast) ran one 320x320 U²-Netp forward "
     "pass 26x slower than fp32 on the 2-core development machine (430 s vs 16 s, both under load); "
     "`segdeploy compare u2netp --backends torch --precisions bf16` checks it"),
)


@dataclass(frozen=True)
class Photo:
    """One bundled photograph and its credit (from ``photos.json``)."""

    file: str
    path: str
    subject: bool
    title: str
    credit: str
    licence: str


def photos_dir() -> Path:
    """Where the bundled photographs live inside the installed package."""
    return Path(str(resources.files("segdeploy").joinpath("assets", "photos")))


def bundled_photos(folder: str | os.PathLike | None = None) -> tuple[list[Photo], str | None]:
    """The photographs listed in ``photos.json`` of ``folder`` (default: the package's).

    Returns:
        (photos, None), or ([], reason) when the folder, its ``photos.json`` or a listed file is
        missing or the list is malformed.
    """
    root = Path(folder) if folder is not None else photos_dir()
    listing = root / "photos.json"
    if not listing.is_file():
        return [], f"no bundled photographs ({listing} is missing)"
    try:
        entries = json.loads(listing.read_text(encoding="utf-8"))
        photos = [Photo(file=e["file"], path=str(root / e["file"]), subject=bool(e.get("subject", True)),
                        title=e.get("title", e["file"]), credit=e.get("credit", ""), licence=e.get("licence", ""))
                  for e in entries]
    except (ValueError, KeyError, TypeError) as exc:
        return [], f"{listing} is malformed ({exc})"
    missing = [p.file for p in photos if not Path(p.path).is_file()]
    if missing:
        return [], f"{listing} lists missing file(s): {', '.join(missing)}"
    if not photos:
        return [], f"{listing} lists no photograph"
    return photos, None


def demo_weights(model: str, weights: str | None) -> tuple[str, str]:
    """(weights for resolve_options, a sentence about them). Falls back to random when the
    packaged file is missing; an explicit ``weights`` is used as given."""
    from segdeploy.core.errors import WeightsError
    from segdeploy.core.registry import get_spec
    from segdeploy.zoo.checkpoints import resolve_weights

    spec = get_spec(model)
    if weights == "random":
        return "random", (f"Random weights (seed {DEMO_SEED}) on request: cut-outs and masks are meaningless; "
                          "fidelity and speed are real.")
    try:
        path = resolve_weights(spec, weights)
    except WeightsError as exc:
        return "random", (f"No trained weights for {model} here ({exc}). Running with random weights (seed "
                          f"{DEMO_SEED}): cut-outs and masks are meaningless; fidelity and speed are real.")
    if str(path) == "random":
        return "random", f"Random weights (seed {DEMO_SEED}): cut-outs and masks are meaningless."
    if not Path(path).is_file():
        return "random", (f"The packaged weights of {model} are missing from this installation ({path}). "
                          f"Running with random weights (seed {DEMO_SEED}): cut-outs and masks are meaningless; "
                          "fidelity and speed are real.")
    variant = spec.weights_variant(str(weights)) if weights else spec.weights_variant(spec.default_weights or "")
    what = f"the packaged {variant.name} weights" if variant is not None else "the given weights"
    return str(path), f"{spec.title}: {what} ({Path(path).name})."


def write_cutouts(runner, config, photos: list[Photo], run_dir: Path) -> list[dict[str, Any]]:
    """Cut-outs (RGBA PNG) and masks of ``photos`` with ``config``'s runtime, into RUN_DIR/cutouts.

    ``foreground`` = share of pixels whose saliency is at least 0.5.
    """
    from segdeploy.engine.images import read_image
    from segdeploy.engine.writers import atomic_write_bytes, encode_png
    from segdeploy.jobs.predict import cutout_image, predict

    runtime = runner.runtime(config)
    out = []
    images = [read_image(p.path) for p in photos]
    predictions = predict(runner.spec, images, runtime=runtime, return_maps=True)
    for photo, image, pred in zip(photos, images, predictions):
        stem = Path(photo.file).stem
        cutout = f"cutouts/{stem}.png"
        mask = f"masks/{stem}.png"
        atomic_write_bytes(run_dir / cutout, encode_png(cutout_image(image, pred, runner.spec)))
        atomic_write_bytes(run_dir / mask, encode_png(pred.mask))
        out.append({**asdict(photo), "cutout": cutout, "mask": mask,
                    "foreground": round(float(np.mean(pred.map >= 0.5)), 4)})
    return out


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512_BF16 or AMX); elsewhere OpenVINO runs a
    bf16 request in fp32 and PyTorch emulates it (26x slower than fp32 on the 2-core machine)."""
    from segdeploy.core.environment import cpu_features

    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_features()))


def judged_images(photos: list[Photo], folder: str, run_dir: Path) -> tuple[str, int, str]:
    """(folder, count, note) of the images the demo's fidelity gate judges: the packaged
    photographs whole and as 3 crops each (:func:`segdeploy.backends.auto.held_out_photos`, 20
    images) written into RUN_DIR/judged; other photographs (``--photos``, generated) as they are,
    with a note when they are fewer than the gate's 16."""
    from PIL import Image

    from segdeploy.backends.auto import held_out_photos, photo_crops

    if Path(folder).resolve() == photos_dir().resolve():
        named = held_out_photos()
    else:
        named = []
        for photo in photos:
            with Image.open(photo.path) as img:
                image = np.asarray(img.convert("RGB"), dtype=np.uint8)
            stem = Path(photo.file).stem
            named += [(stem, image)] + [(f"{stem}-{n}", c) for n, c in photo_crops(image)]
    out = run_dir / "judged"
    out.mkdir(parents=True, exist_ok=True)
    for name, image in named:
        target = out / f"{name}.png"
        if not target.is_file():
            Image.fromarray(image).save(target)
    note = "" if len(named) >= 16 else (f"Only {len(named)} images to judge (fewer than the gate's 16): the "
                                        "verdict is marked as judged on few images.")
    return str(out), len(named), note


def demo_answer(report, auto, random_weights: bool) -> str:
    """The report's first paragraph: are the masks right, what is fastest and faithful, what is not."""
    verdict = report.verdict
    judged = report.compare_inputs or "the judged images"
    auto_row = next((c for c in report.configs if (c.backend, c.precision) == (auto.backend, auto.precision)), None)
    if random_weights:
        first = "Random weights: the masks mean nothing, but fidelity and speed are real."
    elif auto_row is not None and auto_row.passes:
        first = (f"The masks are right: {auto.backend} {auto.precision}, what `--backend auto` runs here, keeps "
                 f"PyTorch fp32's masks on {judged}; its cut-outs are below.")
    else:
        first = (f"The cut-outs below are made with {auto.backend} {auto.precision}, what `--backend auto` runs here "
                 f"({auto.why}).")
    parts = [first]
    if verdict.choice is not None:
        parts.append(f"The fastest faithful configuration measured: {verdict.choice.label} "
                     f"({verdict.choice.images_per_s:.2f} images/s at batch {verdict.choice.batch_size}).")
    failing = [c for c in report.configs if c.fails]
    if failing:
        parts.append("Not faithful (their masks differ from PyTorch fp32's beyond the gate): "
                     + "; ".join(f"{c.label} ({(c.gate_reasons or ('gate failed',))[0]})" for c in failing) + ".")
    else:
        parts.append("Every configuration that ran kept the masks.")
    return " ".join(parts)
