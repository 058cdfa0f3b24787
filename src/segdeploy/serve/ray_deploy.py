"""``segdeploy serve --ray``: the same app on Ray Serve, one model copy per replica.

Each replica loads and checks the model exactly as the plain server does
(:meth:`ModelService.load`: runtime, fidelity gate, warm-up) and serves the same FastAPI app
(:func:`segdeploy.serve.app.build_app`, so routes, limits, metrics and response bytes are the
same); only the batcher differs: requests reaching a replica are batched by ``@serve.batch``
(``max_batch_size``, ``batch_wait_timeout_s`` = --max-wait-ms) and run in the replica's single
inference thread. Ray's proxy spreads requests over replicas. Each replica admits requests against
its own memory budget (``--max-inflight-bytes``; by default the machine's share divided by the
number of replicas), on the same code path as the plain server.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import numpy as np

from segdeploy.jobs.options import RuntimeRequest
from segdeploy.serve.batcher import BatchResult
from segdeploy.serve.config import ServeConfig


class _RayBatcher:
    """The app's batcher interface over a replica's ``@serve.batch`` method."""

    def __init__(self, replica, metrics):
        self.replica = replica
        replica._metrics = metrics
        self._waiting = 0
        self.started = True

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def depth(self) -> int:
        return self._waiting

    def submit(self, array: np.ndarray):
        async def one():
            self._waiting += 1
            try:
                return await self.replica.infer(array)
            finally:
                self._waiting -= 1

        return asyncio.ensure_future(one())


def build_deployment(model: str, request: RuntimeRequest, *, config: ServeConfig, reference=None, replicas: int = 1,
                     cpus_per_replica: float = 1.0, gpus_per_replica: float = 0.0):
    """A bound Ray Serve application serving ``model`` on ``replicas`` replicas (``serve.run`` it)."""
    from dataclasses import replace

    from ray import serve

    from segdeploy.serve.admission import default_budget

    max_batch, wait_s = int(config.max_batch_size), float(config.max_wait_ms) / 1000.0
    if config.max_inflight_bytes is None:  # the machine's share, split between the replicas it hosts
        config = replace(config, max_inflight_bytes=default_budget(parts=replicas))

    @serve.deployment(name="segdeploy", num_replicas=int(replicas),
                      ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica},
                      max_ongoing_requests=int(config.max_queue) + max_batch)
    @serve.ingress()
    class SegdeployDeployment:
        def __init__(self):
            from concurrent.futures import ThreadPoolExecutor

            from segdeploy.serve.service import ModelService

            self.service = ModelService.load(model, request, config=config, reference=reference)
            self.thread = ThreadPoolExecutor(1, thread_name_prefix="segdeploy-infer")
            self._metrics = None

        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=wait_s)
        async def infer(self, arrays: list[np.ndarray]) -> list[BatchResult]:
            """One forward pass per input shape in the batch Ray collected."""
            loop = asyncio.get_running_loop()
            runtime = self.service.runtimes[0]
            results: list[Any] = [None] * len(arrays)
            groups: dict[tuple, list[int]] = {}
            for index, array in enumerate(arrays):
                groups.setdefault(array.shape, []).append(index)
            for indices in groups.values():
                batch = np.stack([arrays[i] for i in indices]).astype(np.float32, copy=False)
                start = time.perf_counter()
                outputs = await loop.run_in_executor(self.thread, runtime.run, batch)
                seconds = time.perf_counter() - start
                if self._metrics is not None:
                    self._metrics.observe_batch(self.service.name, len(indices), seconds)
                for k, i in enumerate(indices):
                    results[i] = BatchResult([np.asarray(o[k]) for o in outputs], len(indices), seconds)
            return results

        def __serve_build_asgi_app__(self):
            from segdeploy.serve.app import ServerState, build_app

            state = ServerState([self.service], config, lambda service, metrics: _RayBatcher(self, metrics))
            try:
                state.instance = str(serve.get_replica_context().replica_id.unique_id)
            except Exception:  # noqa: BLE001 - informative only
                state.instance = None
            return build_app(state)

    return SegdeployDeployment.bind()


def run_ray(model: str, request: RuntimeRequest, *, config: ServeConfig, host: str = "127.0.0.1", port: int = 8000,
            address: str | None = None, log: Callable[[str], None] | None = None, block: bool = True,
            **deployment: Any) -> int:
    """Start (or join) Ray, deploy, and serve until interrupted; then shut Serve down."""
    import ray
    from ray import serve

    say = log or (lambda message: None)
    ray.init(address=address, ignore_reinit_error=True, include_dashboard=False)
    serve.start(http_options={"host": host, "port": int(port)})
    say(f"deploying {model} on Ray Serve ({deployment.get('replicas', 1)} replicas) at http://{host}:{port}")
    serve.run(build_deployment(model, request, config=config, **deployment), name="segdeploy", route_prefix="/")
    if not block:
        return 0
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        say("shutting down Ray Serve")
    finally:
        serve.shutdown()
    return 0
