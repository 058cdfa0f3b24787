"""``segdeploy serve --ray``: the same app on a local Ray Serve instance with two replicas answers
with the same bytes as the plain server."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.test_serve_support import MODEL, free_port, photo, register_in_process, subprocess_env, write_plugin

pytestmark = pytest.mark.slow


def test_two_ray_replicas_serve_the_plain_servers_bytes(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    serve = pytest.importorskip("ray.serve")
    httpx = pytest.importorskip("httpx")
    from segdeploy.serve import create_app
    from segdeploy.jobs.options import RuntimeRequest
    from segdeploy.serve.config import ServeConfig
    from segdeploy.serve.ray_deploy import build_deployment

    plugin = write_plugin(tmp_path / "plugin")
    register_in_process(plugin)
    bodies = [photo(40 + i) for i in range(3)]
    settings = dict(check_images=16, check_size=(32, 32), max_batch_size=4, max_wait_ms=20)
    plain = create_app(MODEL, weights="random", backend="torch", **settings)

    async def plain_answers():
        async with plain.router.lifespan_context(plain):
            transport = httpx.ASGITransport(app=plain)
            async with httpx.AsyncClient(transport=transport, base_url="http://plain", timeout=300) as client:
                return [(await client.post(f"/v1/models/{MODEL}/predict", content=b)).content for b in bodies]

    expected = asyncio.run(plain_answers())

    # replicas are separate worker processes: they find segdeploy and the test plugin on PYTHONPATH
    env = subprocess_env(plugin)
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    for attempt in range(3):  # Ray gives its raylet 30 s to register: a busy shared machine can miss that
        try:
            ray.init(num_cpus=2, include_dashboard=False,
                     runtime_env={"env_vars": {"PYTHONPATH": env["PYTHONPATH"]}})
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_deployment(MODEL, RuntimeRequest(weights="random", backend="torch"),
                                   config=ServeConfig(**settings), replicas=2, cpus_per_replica=1.0),
                  name="segdeploy", route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 600
        while httpx.get(base + "/readyz", timeout=30).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(1)

        # one at a time, as the plain answers were made: a forward pass of one image either way, so
        # the bytes may be compared exactly (PyTorch may round differently inside larger batches)
        with httpx.Client(base_url=base, timeout=300) as client:
            responses = [client.post(f"/v1/models/{MODEL}/predict", content=bodies[i % 3]) for i in range(12)]
        assert [r.status_code for r in responses] == [200] * 12
        for i, r in enumerate(responses):
            assert r.content == expected[i % 3]
        assert len({r.headers["x-segdeploy-instance"] for r in responses}) == 2  # both replicas answered
        models = httpx.get(base + "/v1/models", timeout=30).json()["models"][0]
        assert models["verified"] is True and models["backend"] == "torch"
    finally:
        serve.shutdown()
        ray.shutdown()
