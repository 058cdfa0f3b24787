"""The gate of a precision a user asked for: ``predict --precision int8`` is judged like ``auto``'s choices.

:func:`judge_runtime` runs an opened runtime and PyTorch fp32 (the same weights) on the same
images and applies the gate of ``segdeploy compare`` (:func:`segdeploy.engine.fidelity.gate_failures`):
for trained weights the held-out photos (:func:`segdeploy.backends.auto.held_out_photos`, 20
named images), for random weights :data:`~segdeploy.backends.auto.GATE_IMAGES` generated
photo-like images (random weights' maps mean nothing on photos).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: precisions whose outputs differ from fp32 by more than rounding: judged before use
JUDGED_PRECISIONS = ("fp16", "bf16", "int8")


@dataclass
class RuntimeVerdict:
    """The gate's verdict on one runtime: ``reason`` names the failing image(s) and measure(s)."""

    passed: bool
    precision: str
    judged: int
    failures: list[str] = field(default_factory=list)
    measures: dict[str, float] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        return "; ".join(self.failures)

    def one_line(self) -> str:
        if self.passed:
            return f"{self.precision} passed the fidelity gate against PyTorch fp32 on {self.judged} images"
        return (f"{self.precision} failed the fidelity gate against PyTorch fp32 on {self.judged} images: "
                f"{self.failures[0] if self.failures else 'no image judged'}")


def _images(spec, trained: bool) -> list[tuple[str, np.ndarray]]:
    from segdeploy.backends.auto import GATE_IMAGES, _gate_size, generated_images, held_out_photos

    photos = held_out_photos() if trained else []
    if photos:
        return photos
    h, w = _gate_size(spec)
    return [(f"generated-{i + 1}", im) for i, im in enumerate(generated_images(GATE_IMAGES, h, w, 1009))]


def judge_runtime(spec, runtime, *, weights=None, seed: int = 0, device: str = "cpu") -> RuntimeVerdict:
    """Judge ``runtime`` (already opened, any backend and precision) against PyTorch fp32 with
    ``weights`` (default: the model's packaged ones)."""
    from segdeploy.backends import open_runtime
    from segdeploy.engine.transforms import preprocess_with_valid
    from segdeploy.engine.fidelity import gate_failures
    from segdeploy.zoo import create_model

    module = create_model(spec, weights, seed=seed)
    record = getattr(module, "segdeploy_weights", None)
    trained = record is None or record.to_dict().get("kind") != "random"
    named = _images(spec, trained)
    reference_rt = open_runtime(module, backend="torch", device=device, precision="fp32")
    reference, candidate, sizes = [], [], []
    for _, image in named:
        chw, _ = preprocess_with_valid(image, spec)
        x = chw[None]
        reference.append([np.asarray(o[0]) for o in reference_rt.run(x)])
        candidate.append([np.asarray(o[0]) for o in runtime.run(x)])
        sizes.append(image.shape[:2])
    precision = getattr(runtime, "precision", "fp32")
    failures, measures = gate_failures(spec, precision, reference, candidate, sizes, [n for n, _ in named])
    return RuntimeVerdict(not failures, precision, len(named), failures, measures)


__all__ = ["JUDGED_PRECISIONS", "RuntimeVerdict", "judge_runtime"]
