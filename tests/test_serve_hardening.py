"""The server under hostile or careless clients, on a real uvicorn server on a loopback port:
memory admission by decoded size, stalled-header connections, malformed and aborted uploads,
what /v1/models reveals, and /docs and / with no network.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
import threading
import time

import numpy as np
import pytest

from tests.test_serve_support import MODEL, free_port, photo

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

#: one 1000 x 1000 RGB upload is priced at ~20 MB (8 + 12 bytes per pixel): one fits, two do not
BUDGET = 30_000_000


class Server:
    """uvicorn serving ``app`` in a thread, with segdeploy's connection settings."""

    def __init__(self, app, config):
        from segdeploy.serve.connections import uvicorn_settings

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    **uvicorn_settings(config)))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(60)


@pytest.fixture(scope="module")
def server(controlled):
    from segdeploy.serve import create_app

    app = create_app(MODEL, weights="random", runtime=controlled, check_images=16, check_size=(32, 48),
                     max_batch_size=1, max_wait_ms=0, max_inflight_bytes=BUDGET, max_pixels=4_000_000,
                     header_timeout_s=1.0, max_connections=20)
    with Server(app, app.state.segdeploy.config) as running:
        running.app = app
        yield running


def png(width: int, height: int, seed: int = 0) -> bytes:
    from PIL import Image

    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([(xx * 7 + seed) % 256, (yy * 5) % 256, np.full_like(xx, 60)], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def url(path: str = f"/v1/models/{MODEL}/predict") -> str:
    return path


def test_memory_budget_refuses_with_503_and_releases(server, controlled):
    budget = server.app.state.segdeploy.budget
    one, huge = png(1000, 1000), png(1500, 1500)

    async def scenario():
        async with httpx.AsyncClient(base_url=server.base, timeout=120) as client:
            controlled.hold()
            try:
                first = asyncio.create_task(client.post(url(), content=one))
                for _ in range(6000):  # the first holds its reservation inside the held forward pass
                    if controlled.entered.is_set():
                        break
                    await asyncio.sleep(0.01)
                held = budget.in_use
                second = await client.post(url(), content=png(1000, 1000, 1))
                too_big = await client.post(url(), content=huge)
            finally:
                controlled.release()
            done = await first
            truncated = await client.post(url(), content=one[: len(one) // 2])  # header fine, pixels missing
            after = await client.post(url(), content=png(1000, 1000, 2))
            return held, second, too_big, done, truncated, after

    held, second, too_big, done, truncated, after = asyncio.run(scenario())
    assert 20_000_000 < held <= BUDGET
    assert second.status_code == 503 and int(second.headers["retry-after"]) >= 1
    assert "--max-inflight-bytes" in second.json()["detail"]
    assert too_big.status_code == 413 and "whole memory budget" in too_big.json()["detail"]
    assert done.status_code == 200
    assert truncated.status_code == 400
    assert after.status_code == 200  # the reservations of the finished and the failed requests were released
    assert budget.in_use == 0 and budget.refused >= 1


def _stall(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST /v1/models/x/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n")
    return sock


def _closed(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1024) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_stalled_header_connections_are_closed_and_the_server_keeps_answering(server):
    stalled = [_stall(server.port) for _ in range(60)]  # three times the cap of 20
    try:
        start = time.monotonic()
        closed = [_closed(sock, 5.0) for sock in stalled]
        elapsed = time.monotonic() - start
        assert all(closed), f"{closed.count(False)} stalled connections still open"
        assert elapsed < 8  # header deadline 1 s (the cap closes the extra ones at once)
        assert httpx.get(server.base + "/healthz", timeout=10).status_code == 200
        # a live client is not cut off by the header deadline
        assert httpx.post(server.base + url(), content=photo(3), timeout=120).status_code == 200
    finally:
        for sock in stalled:
            sock.close()


def _statuses(metrics: str, route: str) -> dict[str, float]:
    found = {}
    for line in metrics.splitlines():
        if line.startswith("segdeploy_requests_total{") and f'route="{route}"' in line:
            status = re.search(r'status="(\d+)"', line).group(1)
            found[status] = found.get(status, 0) + float(line.split()[-1])
    return found


def test_malformed_multipart_is_400_and_aborted_uploads_are_not_500(server):
    bad = [b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\nabc",  # no end
           b"garbage without any boundary"]
    answers = [httpx.post(server.base + path, content=body, timeout=30,
                          headers={"content-type": "multipart/form-data; boundary=xyz"})
               for body in bad for path in (url(), "/api/remove")]
    no_boundary = httpx.post(server.base + url(), content=b"--\r\n", timeout=30,
                             headers={"content-type": "multipart/form-data"})
    assert [a.status_code for a in answers + [no_boundary]] == [400] * 5, [a.text for a in answers + [no_boundary]]
    assert all("multipart" in a.json()["detail"] for a in answers + [no_boundary])

    before = _statuses(httpx.get(server.base + "/metrics").text, "/v1/models/{model}/predict")
    for _ in range(3):  # a client that promises 100 kB, sends 1 kB and goes away
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(f"POST {url()} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     "Content-Length: 100000\r\n\r\n".encode() + b"\x89PNG" + b"\0" * 1000)
        time.sleep(0.2)
        sock.close()
    deadline = time.monotonic() + 30
    while True:
        after = _statuses(httpx.get(server.base + "/metrics").text, "/v1/models/{model}/predict")
        if after.get("499", 0) - before.get("499", 0) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert after.get("499", 0) - before.get("499", 0) == 3
    assert after.get("500", 0) == before.get("500", 0)
    assert httpx.get(server.base + "/healthz").status_code == 200


def _strings(data):
    if isinstance(data, dict):
        for value in data.values():
            yield from _strings(value)
    elif isinstance(data, list):
        for value in data:
            yield from _strings(value)
    elif isinstance(data, str):
        yield data


def test_models_route_names_files_and_digests_never_paths(plugin_dir, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from segdeploy.serve import create_app

    monkeypatch.setenv("SEGDEPLOY_CACHE", str(tmp_path / "cache"))  # the export lands under an absolute path
    app = create_app(MODEL, weights="random", backend="onnxruntime", check_images=16, check_size=(32, 48),
                     max_batch_size=1)

    async def scenario():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return (await client.get("/v1/models")).json()

    body = asyncio.run(scenario())
    model = body["models"][0]
    assert model["verified"] is True
    assert model["artifact"]["name"].endswith(".onnx") and re.fullmatch(r"[0-9a-f]{64}", model["artifact"]["sha256"])
    assert model["fidelity"]["artifact"]["sha256"] == model["artifact"]["sha256"]
    assert re.fullmatch(r"[0-9a-f]{64}", model["fidelity"]["weights"]["state_dict_sha256"])
    text = json.dumps(body)
    assert str(tmp_path) not in text
    leaks = [s for s in _strings(body) if re.search(r"(^|\s)(/|~/)[^\s/]+/", s)]
    assert leaks == []


def test_docs_and_page_load_without_any_remote_asset(server):
    with httpx.Client(base_url=server.base, timeout=30) as client:
        for page in ("/docs", "/redoc", "/"):
            html = client.get(page)
            assert html.status_code == 200 and "text/html" in html.headers["content-type"]
            assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html.text), page
            assert "cdn" not in html.text.lower(), page
            local = re.findall(r"""(?:src|href)\s*=\s*["'](/[^"']+)["']""", html.text)
            assert local, page
            for asset in local:
                assert client.get(asset).status_code == 200, asset
        for asset in ("/static/page/page.js", "/static/page/page.css"):
            assert not re.search(r"https?://", client.get(asset).text), asset
        assert client.get("/openapi.json").status_code == 200
