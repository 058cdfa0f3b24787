"""The FastAPI app: :func:`create_app` loads and checks a model and returns the ASGI app.

>>> app = create_app("u2netp", weights="official")          # then: uvicorn.run(app)

Routes: ``POST /v1/models/{model}/predict`` (``?output=mask|cutout|prob|json``), ``GET /v1/models``,
``GET /healthz``, ``GET /readyz``, ``GET /metrics`` (Prometheus), ``/`` (a page to try it),
``/docs`` and ``/redoc`` (OpenAPI, from packaged files), and
``POST /api/remove`` for rembg clients (:mod:`segdeploy.serve.rembg_compat`).

Status codes: 400 unreadable image (the reason is in ``detail``) or bad option, 401 API key,
404 unknown model, 413 body over ``max_body_bytes``, image over ``max_pixels`` or over the whole
memory budget, 499 (metrics only) the client went away, 500 the runtime failed on this item, 503
queue full or memory budget in use (``Retry-After``) or not ready, 504 request over its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from fastapi import Request  # module level: FastAPI resolves the routes' string annotations here
from starlette.requests import ClientDisconnect

from segdeploy.core.errors import ImageReadError
from segdeploy.engine.inference_threads import calls_in_flight
from segdeploy.jobs.options import RuntimeRequest
from segdeploy.serve.admission import MemoryBudget, NeverFits, OverBudget, decoded_cost, default_budget
from segdeploy.serve.batcher import DynamicBatcher, QueueFull
from segdeploy.serve.config import ServeConfig
from segdeploy.serve.imaging import ImageTooLarge
from segdeploy.serve.metrics import ServeMetrics
from segdeploy.serve.middleware import BodyTooLarge, GuardMiddleware
from segdeploy.serve.service import OUTPUTS, ModelService

TIMEOUT_HEADER = "x-segdeploy-timeout-ms"
#: status recorded for a request whose client went away before its answer (nginx's convention)
CLIENT_CLOSED = 499


class ServerState:
    """Everything the routes share: services and their batchers, the I/O pool, metrics, readiness."""

    def __init__(self, services: list[ModelService], config: ServeConfig,
                 batcher_factory: Callable[[ModelService, ServeMetrics], Any] | None = None):
        self.config = config
        self.metrics = ServeMetrics()
        self.services = {s.name: s for s in services}
        factory = batcher_factory or _default_batcher
        self.batchers = {s.name: factory(s, self.metrics) for s in services}
        for name, batcher in self.batchers.items():
            self.metrics.track_queue(name, batcher.depth)
            self.metrics.unverified.labels(name).set(1 if self.services[name].unverified else 0)
        self.budget = MemoryBudget(config.max_inflight_bytes or default_budget())
        self.io: ThreadPoolExecutor | None = None
        self.ready = False
        self.draining = False
        #: sent as X-Segdeploy-Instance when set (Ray Serve: the replica answering)
        self.instance: str | None = None

    def any_unverified(self) -> bool:
        return any(s.unverified for s in self.services.values())

    def start(self) -> None:
        """Start the I/O pool and the batchers on the running loop (again after a :meth:`stop`)."""
        if self.io is None:
            self.io = ThreadPoolExecutor(self.config.io_threads, thread_name_prefix="segdeploy-io")
        self.draining = False
        for batcher in self.batchers.values():
            batcher.start()
        self.ready = True

    async def stop(self) -> None:
        """Graceful: not ready any more, finish queued items, then release threads."""
        self.ready, self.draining = False, True
        for batcher in self.batchers.values():
            await batcher.stop()
        if self.io is not None:
            self.io.shutdown(wait=True)
            self.io = None

    async def in_io(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.io, fn, *args)


def _default_batcher(service: ModelService, metrics: ServeMetrics) -> DynamicBatcher:
    cfg = service.config
    # A runtime that takes N calls at once (OpenVINO streams) gets N batch workers: N batches in flight.
    workers = [rt for rt in service.runtimes for _ in range(calls_in_flight(rt))]
    return DynamicBatcher(workers, max_batch_size=cfg.max_batch_size, max_wait_ms=cfg.max_wait_ms,
                          max_queue=cfg.max_queue,
                          on_batch=lambda size, seconds: metrics.observe_batch(service.name, size, seconds))


def create_app(model: str | None = None, request: RuntimeRequest | None = None, *, config: ServeConfig | None = None,
               reference=None, runtime=None, services: list[ModelService] | None = None, batcher_factory=None,
               log: Callable[[str], None] | None = None, **settings: Any):
    """Load ``model``, run its start-up fidelity gate, and return the ASGI app serving it.

    Args:
        model: registry name (resolved to its spec here, at the edge).
        request: the runtime to open (:class:`~segdeploy.jobs.options.RuntimeRequest`; backend
            "auto" picks the fastest configuration for this machine).
        config: batching, limits and gate settings.
        reference: a ``segdeploy compare --json`` report to take the gate verdict from.
        runtime: an opened runtime to serve instead of opening one (embedding, tests).
        services: already loaded :class:`ModelService` objects (the Ray deployment passes its own).
        batcher_factory: ``(service, metrics) -> batcher`` (the Ray deployment uses ``@serve.batch``).
        settings: fields of the RuntimeRequest (``weights=``, ``backend=``, ``backend_options=`` ...)
            or of ServeConfig (``max_batch_size=16`` ...), which override ``request`` / ``config``.

    Raises:
        GateFailed: the gate failed and ``allow_unverified`` is off.
    """
    request_names = {f.name for f in dataclasses.fields(RuntimeRequest)}
    asked = {key: settings.pop(key) for key in list(settings) if key in request_names}
    request = dataclasses.replace(request or RuntimeRequest(), **asked)
    config = dataclasses.replace(config or ServeConfig(), **settings)
    if services is None:
        if model is None:
            raise ValueError("create_app needs a model name (or loaded services)")
        services = [ModelService.load(model, request, config=config, reference=reference, runtime=runtime, log=log)]
    state = ServerState(services, config, batcher_factory)
    return build_app(state)


def build_app(state: ServerState):
    """The FastAPI app over a ready :class:`ServerState` (routes, middleware, lifespan)."""
    from fastapi import FastAPI
    from fastapi.responses import Response

    from segdeploy import __version__

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state.start()
        yield
        await state.stop()  # uvicorn calls this after in-flight requests have been answered

    app = FastAPI(title="segdeploy serve", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Segmentation masks over HTTP with dynamic batching; every model is checked "
                  "against its PyTorch fp32 reference at start-up (see GET /v1/models).")
    app.state.segdeploy = state
    app.add_middleware(GuardMiddleware, state=state)

    answer = make_answer(state)

    predict_body = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string",
                                                                                     "format": "binary"}}}},
        "image/*": {"schema": {"type": "string", "format": "binary"}}}}}

    @app.post("/v1/models/{model}/predict", openapi_extra=predict_body,
              responses={200: {"content": {"image/png": {}, "application/x-npy": {}, "application/json": {}}}})
    async def predict(model: str, request: Request, output: str = "mask"):
        """Segment one image sent as multipart field ``file`` or as the raw body. ``output``: ``mask``
        (the PNG ``segdeploy predict`` writes, at the original size), ``cutout`` (RGBA PNG), ``prob``
        (float32 map, .npy) or ``json`` (size and the mask PNG in base64)."""
        return await answer(model, lambda: read_upload(request), output, request)

    @app.get("/v1/models")
    async def models():
        """What is served: spec, weights (sha256), backend, precision, fidelity verdict, settings."""
        return {"models": [s.describe() for s in state.services.values()], "config": state.config.public(),
                "memory": state.budget.public(), "ready": state.ready}

    @app.get("/healthz")
    async def healthz():
        """The process is up (liveness)."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        """200 once the models are loaded, checked and warm and the batchers run; 503 while draining."""
        if not state.ready:
            return _error(503, "not ready (starting or shutting down)")
        return {"status": "ready", "models": list(state.services)}

    @app.get("/metrics")
    async def metrics():
        """Prometheus text format."""
        body, media = state.metrics.render()
        return Response(body, media_type=media)

    from segdeploy.serve.pages import add_page_routes
    from segdeploy.serve.rembg_compat import add_rembg_routes

    add_rembg_routes(app, state, answer, read_upload)
    add_page_routes(app)
    return app


def _error(status: int, detail: str, headers: dict[str, str] | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _segment(state: ServerState, service: ModelService, data_source, output: str, background):
    """Read, admit by memory, decode, batch, encode: (body, media type, batch result)."""
    data, name = await data_source()
    # priced from the header, before any pixel is decoded; released however it ends
    cost = await state.in_io(decoded_cost, data, name, state.config.max_pixels)
    with state.budget.reserve(cost):
        prepared = await state.in_io(service.prepare, data, name)
        del data
        result = await state.batchers[service.name].submit(prepared.chw)
        extra = {"batch_size": result.batch_size} if output == "json" else None
        body, media = await state.in_io(service.finish, prepared, result.outputs, output, background, extra)
    return body, media, result


def make_answer(state: ServerState):
    """The handler shared by /v1/models/{model}/predict and /api/remove, every failure mapped to
    its status code."""
    from fastapi.responses import Response

    error = _error

    async def answer(model: str, data_source, output: str, request: Request, background=None):
        service = state.services.get(model)
        if service is None:
            return error(404, f"unknown model {model!r}; this server serves {', '.join(state.services)} "
                         "(GET /v1/models)")
        if output not in OUTPUTS:
            return error(400, f"unknown output {output!r}; use one of {', '.join(OUTPUTS)}")
        if not state.batchers[model].started:
            state.start()  # an embedding app whose server does not run the lifespan
        timeout = state.config.request_timeout_s
        asked = request.headers.get(TIMEOUT_HEADER)
        if asked and asked.isdigit():
            timeout = min(timeout, int(asked) / 1000.0)  # a client may shorten its deadline, not extend it
        try:
            async with asyncio.timeout(timeout):
                body, media, result = await _segment(state, service, data_source, output, background)
        except ImageReadError as exc:
            return error(400, str(exc))
        except ClientDisconnect:
            return Response(status_code=CLIENT_CLOSED)  # nobody reads it; /metrics counts it apart from errors
        except OverBudget as exc:
            return error(503, f"server busy: {exc}; retry later", {"Retry-After": "1"})
        except (ImageTooLarge, BodyTooLarge, NeverFits) as exc:
            return error(413, str(exc) or f"request body is larger than {state.config.max_body_bytes} bytes")
        except QueueFull as exc:
            depth = state.batchers[model].depth()
            wait = max(1, math.ceil(depth * 0.05))  # ~50 ms per queued image on a small CPU: a hint, not a promise
            return error(503, f"server busy: {exc}; retry later", {"Retry-After": str(wait)})
        except TimeoutError:
            return error(504, f"request took longer than its timeout of {timeout:g} s (queue + inference)")
        except UploadError as exc:
            return error(400, str(exc))
        except Exception as exc:  # noqa: BLE001 - this item failed in the runtime; others are unaffected
            return error(500, f"inference failed for this request: {type(exc).__name__}: {exc}")
        headers = {"X-Segdeploy-Model": model, "X-Segdeploy-Batch-Size": str(result.batch_size),
                   "X-Segdeploy-Inference-Ms": f"{result.infer_s * 1000:.0f}"}
        return Response(body, media_type=media, headers=headers)

    return answer


class UploadError(ValueError):
    pass


async def read_upload(request, field: str = "file") -> tuple[bytes, str]:
    """The image bytes and a name for messages: multipart field ``field``, else the raw body.
    No URL is ever fetched."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await read_form(request)
        upload = form.get(field)
        if upload is None or isinstance(upload, str):
            raise UploadError(f"multipart body has no file field {field!r}; send the image as {field}=@image.jpg")
        data = await upload.read()
        return data, upload.filename or field
    return await request.body(), "request body"


async def read_form(request):
    """The multipart form, or :class:`UploadError` (HTTP 400) naming what is malformed."""
    from starlette.exceptions import HTTPException

    try:
        return await request.form()
    except ClientDisconnect:
        raise
    except HTTPException as exc:  # Starlette's own verdict on the body (bad boundary, parts over its limits)
        raise UploadError(f"malformed multipart body: {exc.detail}") from None
    except (ValueError, KeyError, UnicodeError, AssertionError) as exc:
        raise UploadError(f"malformed multipart body: {type(exc).__name__}: {exc}") from None
