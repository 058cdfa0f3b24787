"""Scale-out batch inference on Ray Data: ``segdeploy predict|eval --engine ray``.

The same job as the local engine, spread over a Ray cluster:

    file list (local paths or pyarrow filesystem URIs such as s3://)
      → read + preprocess in Ray tasks
      → map_batches on an actor pool; each actor opens the runtime once (segdeploy.backends.open_runtime:
        the same backends, precisions and auto choice as the local engine)
      → decode + atomic write (predict) or per-shard metric state (eval) in the actors
      → the driver counts results (one rich progress bar) and merges metric states exactly.

Planning (which inputs, which output names, what is already done) and writing are the local engine's
own functions (:mod:`segdeploy.jobs.predict`), so outputs are byte-identical for the same runtime
settings (on CPU the thread count, ``--cpus-per-worker``, can move float results in the last bits)
and a rerun resumes.
Ray is an optional dependency: ``pip install "segdeploy[ray]"``.
"""

from __future__ import annotations

from segdeploy.core.errors import RuntimeUnavailable

RAY_INSTALL = 'pip install "segdeploy[ray]"'


def require_ray():
    """Import and return the ``ray`` module, or fail with the install command.

    Raises:
        RuntimeUnavailable: Ray (with Ray Data) is not installed.
    """
    try:
        import ray
        import ray.data  # noqa: F401  (the Data library ships in the "data" extra of ray)
    except ImportError as exc:
        raise RuntimeUnavailable(f"--engine ray needs Ray Data, which is not installed ({exc}); install it with: "
                                 f"{RAY_INSTALL}") from None
    return ray


__all__ = ["RAY_INSTALL", "require_ray"]
