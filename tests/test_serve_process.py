"""``segdeploy serve`` as a real process: uvicorn on a free loopback port, started by the CLI.

Also the CLI's refusals: a failed fidelity gate exits 3 before anything listens; a public bind
address without an API key exits 2.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import pytest

from tests.test_serve_support import MODEL, free_port, photo, subprocess_env, wait_until_ready

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")


def _metric(text: str, prefix: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def test_uvicorn_process_serves_predict_bytes_batches_and_drains(plugin_dir, tmp_path):
    from segdeploy.cli.main import main

    image = tmp_path / "in" / "cat.jpg"
    image.parent.mkdir()
    image.write_bytes(photo(11, 50, 70))
    assert main(["predict", MODEL, str(image), "-o", str(tmp_path / "out"), "--weights", "random",
                 "--backend", "torch", "--quiet"]) == 0
    expected = (tmp_path / "out" / "cat.png").read_bytes()

    port = free_port()
    log = open(tmp_path / "server.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "segdeploy.cli.main", "serve", MODEL, "--weights", "random", "--backend", "torch",
         "--port", str(port), "--check-images", "16", "--check-size", "32x48", "--max-batch-size", "4",
         "--max-wait-ms", "50", "--log-level", "warning"],
        env=subprocess_env(plugin_dir), stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(proc, base, log)

        single = httpx.post(base + f"/v1/models/{MODEL}/predict", files={"file": ("cat.jpg", image.read_bytes())},
                            timeout=300)
        assert single.status_code == 200
        assert single.content == expected

        async def burst():
            async with httpx.AsyncClient(base_url=base, timeout=300) as client:
                first = asyncio.create_task(client.post(f"/v1/models/{MODEL}/predict", content=photo(1)))
                await asyncio.sleep(0.05)  # the first request occupies the runtime; the rest queue behind it
                rest = [client.post(f"/v1/models/{MODEL}/predict", content=photo(2 + i)) for i in range(7)]
                return await asyncio.gather(first, *rest)

        responses = asyncio.run(burst())
        assert [r.status_code for r in responses] == [200] * 8
        assert max(int(r.headers["x-segdeploy-batch-size"]) for r in responses) > 1
        metrics = httpx.get(base + "/metrics", timeout=30).text
        batches = _metric(metrics, "segdeploy_batch_size_count")
        images = _metric(metrics, "segdeploy_batch_size_sum")
        assert images == 9 and batches < images  # 9 images in fewer forward passes

        # graceful shutdown: SIGTERM while requests are in flight; they are still answered
        async def drain():
            async with httpx.AsyncClient(base_url=base, timeout=300) as client:
                pending = [asyncio.create_task(client.post(f"/v1/models/{MODEL}/predict", content=photo(20 + i)))
                           for i in range(3)]
                await asyncio.sleep(0.3)
                proc.send_signal(signal.SIGTERM)
                return await asyncio.gather(*pending)

        drained = asyncio.run(drain())
        assert [r.status_code for r in drained] == [200] * 3
        # uvicorn re-raises the SIGTERM it handled once the server has drained (so that process
        # managers see the usual signal exit): -SIGTERM here means a clean drain, not a crash
        assert proc.wait(120) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_cli_refuses_to_start_on_a_failed_gate(plugin_dir, monkeypatch, capsys):
    import uvicorn

    from segdeploy.cli.main import main
    from segdeploy.serve import gate

    monkeypatch.setattr(gate, "fidelity_gate",
                        lambda spec, **kw: {"status": "fail", "failures": ["d0: rel 2e-02 > 1e-04 (injected)"]})
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("uvicorn started despite a failed gate"))
    code = main(["serve", MODEL, "--weights", "random", "--backend", "torch", "--port", str(free_port()),
                 "--check-images", "1", "--check-size", "32x32", "--max-batch-size", "1"])
    assert code == 3
    err = capsys.readouterr().err
    assert "the gate did not pass (fail: d0: rel 2e-02 > 1e-04 (injected))" in err and "--allow-unverified" in err


def test_cli_public_bind_needs_api_key(plugin_dir, monkeypatch, capsys):
    from segdeploy.cli.main import main

    monkeypatch.delenv("SEGDEPLOY_API_KEY", raising=False)
    assert main(["serve", MODEL, "--weights", "random", "--host", "0.0.0.0"]) == 2
    assert "--api-key" in capsys.readouterr().err


def test_cli_streams_open_openvino_with_one_batch_worker_per_stream(plugin_dir, monkeypatch, capsys):
    pytest.importorskip("openvino")
    import uvicorn

    from segdeploy.cli.main import main

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app))
    assert main(["serve", MODEL, "--weights", "random", "--backend", "openvino", "--streams", "2",
                 "--max-batch-size", "1", "--port", str(free_port()), "--check-images", "16",
                 "--check-size", "32x32"]) == 0
    state = served["app"].state.segdeploy
    runtime = state.services[MODEL].runtimes[0]
    assert runtime.describe()["streams"] == 2 and runtime.concurrent_calls == 2
    assert len(state.batchers[MODEL].runtimes) == 2  # two passes at once, one per stream


@pytest.mark.parametrize("flags, message", [(["--streams", "0"], "at least 1"),
                                            (["--streams", "2", "--backend", "torch"], "OpenVINO setting"),
                                            (["--backend", "onnxruntime", "--precision", "int8"], "--onnx FILE"),
                                            (["--max-inflight-bytes", "lots"], "--max-inflight-bytes"),
                                            (["--check-images", "nowhere"], "neither a count nor a folder")])
def test_cli_streams_misuse_is_a_usage_error(plugin_dir, capsys, flags, message):
    from segdeploy.cli.main import main

    assert main(["serve", MODEL, "--weights", "random", *flags]) == 2
    assert message in capsys.readouterr().err
