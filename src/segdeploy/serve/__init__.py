"""HTTP serving: ``segdeploy serve`` (FastAPI + uvicorn, dynamic batching, start-up fidelity gate,
Prometheus metrics) and its Ray Serve deployment.

>>> from segdeploy.serve import create_app
>>> app = create_app("u2netp", weights="random", backend="onnxruntime", max_batch_size=8)

See docs/serving.md.
"""

from segdeploy.serve.config import ServeConfig


def create_app(*args, **kwargs):
    """Load and check a model and return the ASGI app (see :func:`segdeploy.serve.app.create_app`)."""
    from segdeploy.serve.app import create_app as _create_app

    return _create_app(*args, **kwargs)


__all__ = ["create_app", "ServeConfig"]
