"""The options of a run: a recipe's defaults for this machine, checked overrides (``segdeploy run`` flags)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segdeploy.core.errors import WeightsError
from segdeploy.recipes.catalog import Recipe, RunOptions, get_recipe


class MissingWeightsFile(WeightsError, FileNotFoundError):
    """--weights names no file: a usage error (one line, exit 2), still a FileNotFoundError for callers."""

#: Seed of the synthetic images the compare step uses when the recipe has no dataset.
SYNTHETIC_SEED = 0

@dataclass(frozen=True)
class RunRequest:
    """What a ``segdeploy run`` asks of a recipe; every None takes the recipe's default for this machine.

    Attributes:
        weights: checkpoint path, "random", or None (the recipe's default, else an error saying
            how to get the official file).
        data_root, dataset, dataset_options, limit: the dataset the eval step scores.
        model: one of the recipe's models (None: its first).
        device: "cpu", "cuda" or "auto" (CUDA when there is one).
        backends, precisions, batch_sizes: the matrix (None: the recipe's, for a CPU or a GPU).
        input_size: the benchmark's input (H, W) for native-resolution models.
        eval_on: which configurations the eval step scores ("auto", "all", "first", backend:precision,...).
        compare_images: images the compare step judges.
        bench_warmup, bench_iters: calls per batch size (None: 1 + 5 on a CPU, 10 + 50 on a GPU).
        seed: seed of random weights and synthetic images.
        protocol: the model's test-time protocol by name (models that have one; None: its default).
        model_input_size: (H, W) the model's preprocessing squashes images to, replacing the
            spec's (quick trials and tests only: accuracy is then not the guide's).
        calib: folder of int8 calibration images (default: the dataset's images after the compared
            ones, else synthetic images other than the compared ones; never the judged images).
        num_calib: calibration images used (default segdeploy.convert.quantize.DEFAULT_NUM_CALIB).
        allow_few_images: let the compare step judge fewer than 16 images (the report says so).
        images: folder of images (no ground truth) the compare step judges when there is no
            dataset, instead of synthetic ones (the demo's photographs).
        exclude: (backend, precision, reason) configurations not to run; recorded as skipped with
            the reason.
    """

    weights: str | None = None
    data_root: str | None = None
    model: str | None = None
    dataset: str | None = None
    device: str = "auto"
    backends: Any = None
    precisions: Any = None
    batch_sizes: Any = None
    input_size: Any = None
    limit: int | None = None
    dataset_options: dict[str, Any] | None = None
    eval_on: str = "auto"
    compare_images: int | None = None
    bench_warmup: int | None = None
    bench_iters: int | None = None
    seed: int = 0
    protocol: str | None = None
    model_input_size: Any = None
    calib: str | None = None
    num_calib: int | None = None
    allow_few_images: bool = False
    images: str | None = None
    exclude: tuple[tuple[str, str, str], ...] = ()


def resolve_options(recipe: str | Recipe, asked: RunRequest | None = None) -> RunOptions:
    """Fill in a recipe's defaults for this machine and check what was asked (:class:`RunRequest`).

    On a CPU the matrix is the recipe's modest ``cpu_precisions`` x ``cpu_batch_sizes`` and the
    benchmark does 1 warm-up + 5 timed calls per batch size; on CUDA the guide's batch sizes and
    precisions with 10 + 50 calls. Every choice is recorded in results.json.
    """
    recipe = get_recipe(recipe)
    asked = asked or RunRequest()
    model, dataset = _model_and_dataset(recipe, asked)
    weights = _weights(recipe, model, asked.weights)
    device = asked.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    cpu = not str(device).startswith("cuda")
    backends, precisions, batch_sizes = _matrix(recipe, asked, cpu)
    if asked.limit is not None and asked.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {asked.limit}")
    judged = asked.compare_images or recipe.compare_images
    extra = _extra(asked, judged)
    size = _hw(asked.input_size) if asked.input_size is not None else (
        _hw(asked.model_input_size) if asked.model_input_size is not None else recipe.input_size)
    eval_on = asked.eval_on
    if eval_on not in ("auto", "all", "first") and not all(":" in item for item in eval_on.split(",")):
        raise ValueError(f"--eval-on takes auto, all, first or backend:precision[,...]; got {eval_on!r}")
    return RunOptions(
        recipe=recipe.name, model=model, weights=str(weights), dataset=dataset,
        data_root=str(Path(asked.data_root).resolve()) if asked.data_root else None, device=str(device),
        backends=backends, precisions=precisions, batch_sizes=batch_sizes, input_size=size, limit=asked.limit,
        dataset_options=tuple(sorted({**dict(recipe.dataset_options), **(asked.dataset_options or {})}.items())),
        eval_on=eval_on, compare_images=judged,
        bench_warmup=asked.bench_warmup if asked.bench_warmup is not None else (1 if cpu else 10),
        bench_iters=asked.bench_iters if asked.bench_iters is not None else (5 if cpu else 50),
        seed=asked.seed, protocol=asked.protocol, extra=tuple(sorted(extra.items())),
    )


def _model_and_dataset(recipe: Recipe, asked: RunRequest) -> tuple[str, str | None]:
    model = asked.model or recipe.model
    if model not in recipe.allowed_models():
        raise ValueError(f"recipe {recipe.name} runs {', '.join(recipe.allowed_models())}; got --model {model}")
    if asked.dataset is not None and recipe.dataset is None:
        raise ValueError(f"recipe {recipe.name} has no dataset step (the guide measures cosine similarity only)")
    dataset = asked.dataset or recipe.dataset
    if dataset is not None and dataset not in recipe.allowed_datasets():
        raise ValueError(f"recipe {recipe.name} scores {', '.join(recipe.allowed_datasets())}; got --dataset "
                         f"{dataset}")
    return model, dataset


def _weights(recipe: Recipe, model: str, weights):
    """The checkpoint to run: asked, else the recipe's; an error that says how to get it when there is none."""
    if weights is None:
        weights = recipe.default_weights
    if weights is None:
        from segdeploy.core.registry import get_spec

        how = get_spec(model).how_to_get
        raise WeightsError(f"recipe {recipe.name} needs the official weights of {model}: {how} "
                           "Or pass --weights random to try the whole pipeline with deterministic random weights "
                           "(accuracy then means nothing).")
    if str(weights) != "random" and not Path(weights).is_file():
        raise MissingWeightsFile(f"--weights {weights}: no such file; give the path of the checkpoint file "
                                 "(see 'segdeploy info MODEL' for where to get it), or 'random' for a trial run")
    return weights


def _matrix(recipe: Recipe, asked: RunRequest, cpu: bool):
    """(backends, precisions, batch sizes) to run, checked."""
    from segdeploy.backends import PRECISIONS, backend_names

    backends = tuple(asked.backends or recipe.backends or backend_names())
    precisions = tuple(asked.precisions or (recipe.cpu_precisions if cpu else recipe.precisions))
    batch_sizes = tuple(int(b) for b in (asked.batch_sizes or (recipe.cpu_batch_sizes if cpu else recipe.batch_sizes)))
    unknown = [b for b in backends if b not in backend_names()]
    if unknown:
        raise ValueError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(backend_names())}")
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise ValueError(f"unknown precision(s) {', '.join(unknown)}; choose from {', '.join(PRECISIONS)}")
    if any(b < 1 for b in batch_sizes):
        raise ValueError(f"batch sizes must be positive, got {list(batch_sizes)}")
    return backends, precisions, batch_sizes


def _extra(asked: RunRequest, judged: int) -> dict[str, Any]:
    """The checked options recorded in ``RunOptions.extra`` (calibration, judged images, exclusions)."""
    extra: dict[str, Any] = {}
    if asked.model_input_size is not None:
        extra["model_input_size"] = list(_hw(asked.model_input_size))
    if asked.calib is not None:
        if not Path(asked.calib).is_dir():
            raise FileNotFoundError(f"{asked.calib}: --calib must be a folder of images")
        extra["calib"] = str(Path(asked.calib).resolve())
    if asked.num_calib is not None:
        if asked.num_calib < 1:
            raise ValueError(f"--num-calib must be >= 1, got {asked.num_calib}")
        extra["num_calib"] = int(asked.num_calib)
    if asked.allow_few_images:
        extra["allow_few_images"] = True
    from segdeploy.engine.gate import MIN_IMAGES

    if judged < 1:
        raise ValueError(f"--compare-images must be >= 1, got {judged}")
    if judged < MIN_IMAGES and not asked.allow_few_images:
        from segdeploy.core.errors import UsageError

        raise UsageError(f"--compare-images {judged}: the fidelity gate judges at least {MIN_IMAGES} images; pass "
                         "--allow-few-images to judge fewer (the report says so)")
    if asked.images is not None:
        if not Path(asked.images).is_dir():
            raise FileNotFoundError(f"{asked.images}: images must be a folder of images")
        extra["images"] = str(Path(asked.images).resolve())
    if asked.exclude:
        extra["exclude"] = tuple(tuple(item) for item in asked.exclude)
    return extra


def _hw(value) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, str):
        parts = [int(p) for p in value.lower().split("x")]
        return (parts[0], parts[-1])
    h, w = value
    return (int(h), int(w))
