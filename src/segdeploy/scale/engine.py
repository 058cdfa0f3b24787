"""The Ray engine: the :class:`segdeploy.jobs.engine.Engine` protocol on a Ray cluster."""

from __future__ import annotations

from dataclasses import dataclass

from segdeploy.scale.cluster import RayOptions


@dataclass(frozen=True)
class RayEngine:
    """Reading in Ray tasks, inference on actors that each open the runtime once, outputs written by
    the workers (:mod:`segdeploy.scale.predict`, :mod:`segdeploy.scale.evaluate`)."""

    ray: RayOptions
    name: str = "ray"

    def predict_files(self, model, inputs, out_dir, options, *, progress=True, runtime=None, log=None):
        """As the local engine's; ``runtime`` and ``log`` do not apply (the actors open their own)."""
        from segdeploy.scale.predict import predict_files_ray

        return predict_files_ray(model, inputs, out_dir, options, ray=self.ray, progress=progress)

    def evaluate(self, model, dataset, data_root, options, *, progress=True):
        from segdeploy.scale.evaluate import evaluate_ray

        return evaluate_ray(model, dataset, data_root, options, ray=self.ray, progress=progress)
