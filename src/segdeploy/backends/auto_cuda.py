"""How ``--backend auto`` runs PyTorch on a CUDA GPU: the options of its candidates and the compile budget.

Measured on one H200 (benchmarks/results/gpu_check.json, u2netp fp16, batch 64, channels_last):
eager 1,350 images/s, CUDA graphs 1,370 (the kernels, not their launches, take the time at this
batch), ``torch.compile`` 2,930-3,070 (fused BatchNorm/ReLU/upsampling kernels). Compiling is what
pays, so the fp16 candidate is compiled when the budget allows it:

* **The budget**: one inductor build per model, precision and input shape. Batches are padded to
  one bucket (:data:`CUDA_BATCH`), so a run compiles once: about 50 s for u2netp on an H200 the
  first time, a few seconds afterwards, because inductor's compiled kernels are cached on disk under
  ``<segdeploy cache>/inductor`` (``TORCHINDUCTOR_CACHE_DIR``, unless the user set it).
* ``SEGDEPLOY_COMPILE=never`` keeps every candidate eager (no build at all); ``always`` compiles
  native-size models too (one build per photo size: only worth it for one-size folders).
  Default ``auto``: fixed-size models only.

Candidates are cast whole to fp16 / bf16 (``cast="half"``: no per-operation casts, 10 % faster than
autocast in eager) and run channels_last (NHWC tensor-core convolutions).
"""

from __future__ import annotations

import os
from typing import Any

#: the batch a compiled CUDA candidate runs (smaller batches are padded up to it)
CUDA_BATCH = 64
#: the batch the pipeline sends on CUDA when the user does not say (predict, eval)
DEFAULT_CUDA_BATCH = CUDA_BATCH


def compile_policy() -> str:
    policy = os.environ.get("SEGDEPLOY_COMPILE", "auto").strip().lower()
    return policy if policy in ("auto", "never", "always") else "auto"


def compiles(spec) -> bool:
    """True when auto's CUDA candidates are compiled for ``spec`` (see the module docstring)."""
    policy = compile_policy()
    if policy == "never":
        return False
    return policy == "always" or spec.preprocess.size is not None


def use_inductor_cache() -> str:
    """Point inductor's on-disk cache into segdeploy's cache (a user's own setting wins)."""
    from segdeploy.convert.export_cache import cache_dir

    if not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir() / "inductor")
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


def cuda_options(spec, precision: str | None) -> dict[str, Any]:
    """Options auto opens (and probes) a PyTorch CUDA candidate with."""
    options: dict[str, Any] = {"channels_last": True}
    if precision in ("fp16", "bf16"):
        options["cast"] = "half"
    if spec is not None and compiles(spec):
        use_inductor_cache()
        options.update(mode="compile", compile_mode="default", batch_buckets=(CUDA_BATCH,))
    return options


def timing_shape(spec, default: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The input auto times a CUDA candidate on: the compiled batch for fixed-size models (batch 1
    would time a padded batch of 64, or leave the GPU idle)."""
    if spec.preprocess.size is None:
        return default
    return (CUDA_BATCH, *default[1:])
