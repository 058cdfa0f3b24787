"""Where a ``predict`` or ``eval`` job runs: the :class:`Engine` protocol and the local engine.

An engine takes the same job (model, inputs, options) and leaves the same outputs, manifest and
record; only where the work happens differs. :class:`LocalEngine` runs it in this process with
threads; :class:`segdeploy.scale.engine.RayEngine` on a Ray cluster. The command line picks one
(``--engine``) and calls it; nothing else in a command depends on which.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Protocol

from segdeploy.jobs.options import EvalOptions, PredictOptions
from segdeploy.jobs.plan import PredictSummary


class Engine(Protocol):
    """What every engine does."""

    #: shown in messages ("local", "ray")
    name: str

    def predict_files(self, model: str, inputs: list[str], out_dir: str | os.PathLike, options: PredictOptions, *,
                      progress: bool = True, runtime=None,
                      log: Callable[[str], None] | None = None) -> PredictSummary:
        """Predict masks for files, folders and patterns into ``out_dir`` (resumable, atomic)."""

    def evaluate(self, model: str, dataset: str, data_root: str | os.PathLike, options: EvalOptions, *,
                 progress: bool = True) -> dict[str, Any]:
        """Score ``model`` on ``dataset``; the JSON-ready evaluation record."""


class LocalEngine:
    """This process: reader, inference and writer threads (:mod:`segdeploy.engine.pipeline`)."""

    name = "local"

    def predict_files(self, model, inputs, out_dir, options, *, progress=True, runtime=None, log=None):
        from segdeploy.jobs.predict import predict_files

        return predict_files(model, inputs, out_dir, options, progress=progress, runtime=runtime, log=log)

    def evaluate(self, model, dataset, data_root, options, *, progress=True):
        from segdeploy.jobs.evaluate import evaluate

        return evaluate(model, dataset, data_root, options, progress=progress)
