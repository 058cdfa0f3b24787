"""segdeploy serve through the real ASGI stack (httpx against the app, lifespan running).

One app is shared by the module (loading and the start-up gate cost seconds on a busy 2-core
machine); its runtime is a real PyTorch runtime behind :class:`ControlledRuntime`, which lets a
test hold forward passes so that requests pile up deterministically.
"""

from __future__ import annotations

import asyncio
import base64
import io

import numpy as np
import pytest

from tests.test_serve_support import MODEL, photo

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def app(controlled):
    from segdeploy.serve import create_app

    return create_app(MODEL, weights="random", runtime=controlled, check_images=16, check_size=(32, 48),
                      max_batch_size=4, max_wait_ms=20, max_queue=3, max_body_bytes=200_000, max_pixels=100_000)


def run(app, scenario):
    """Run ``scenario(client)`` with the app's lifespan (batchers started, drained at the end)."""

    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=120) as client:
                return await scenario(client)

    return asyncio.run(main())


def predict_url(model=MODEL, output=None):
    return f"/v1/models/{model}/predict" + (f"?output={output}" if output else "")


async def wait_until(condition, seconds=60.0):
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def test_mask_bytes_equal_segdeploy_predict(app, tmp_path):
    from segdeploy.cli.main import main

    image = tmp_path / "in" / "shot.jpg"
    image.parent.mkdir()
    image.write_bytes(photo(7, 45, 61))
    assert main(["predict", MODEL, str(image), "-o", str(tmp_path / "out"), "--weights", "random",
                 "--backend", "torch", "--quiet"]) == 0
    expected = (tmp_path / "out" / "shot.png").read_bytes()

    async def scenario(client):
        raw = await client.post(predict_url(), content=image.read_bytes())
        multipart = await client.post(predict_url(), files={"file": ("shot.jpg", image.read_bytes(), "image/jpeg")})
        as_json = await client.post(predict_url(output="json"), content=image.read_bytes())
        prob = await client.post(predict_url(output="prob"), content=image.read_bytes())
        cutout = await client.post(predict_url(output="cutout"), content=image.read_bytes())
        return raw, multipart, as_json, prob, cutout

    raw, multipart, as_json, prob, cutout = run(app, scenario)
    assert raw.status_code == 200 and raw.headers["content-type"] == "image/png"
    assert raw.headers["x-segdeploy-batch-size"] == "1"
    assert raw.content == expected
    assert multipart.content == expected
    body = as_json.json()
    assert (body["height"], body["width"]) == (45, 61)
    assert base64.b64decode(body["mask_png_base64"]) == expected
    from PIL import Image

    prob_map = np.load(io.BytesIO(prob.content))
    mask = np.asarray(Image.open(io.BytesIO(expected)))
    assert prob_map.shape == (45, 61) and prob_map.dtype == np.float32
    assert np.array_equal(np.round(prob_map * 255).astype(np.uint8), mask)
    rgba = np.asarray(Image.open(io.BytesIO(cutout.content)))
    assert rgba.shape == (45, 61, 4) and np.array_equal(rgba[..., 3], mask)


def test_concurrent_requests_share_a_forward_pass(app, controlled):
    async def scenario(client):
        controlled.hold()
        first = asyncio.create_task(client.post(predict_url(), content=photo(1)))
        await wait_until(controlled.entered.is_set)  # the worker is inside a forward pass
        others = [asyncio.create_task(client.post(predict_url(), content=photo(10 + i))) for i in range(3)]
        state = app.state.segdeploy
        await wait_until(lambda: state.batchers[MODEL].depth() == 3)
        controlled.release()
        responses = await asyncio.gather(first, *others)
        metrics = (await client.get("/metrics")).text
        return responses, metrics

    responses, metrics = run(app, scenario)
    assert [r.status_code for r in responses] == [200] * 4
    # three waiting, batch sizes 1, 2, 4 (max 4): a pass of two, then the third alone
    assert sorted(r.headers["x-segdeploy-batch-size"] for r in responses[1:]) == ["1", "2", "2"]
    # histogram: at least one batch larger than 1 (count of batches <= 1 is below the total count)
    le1 = _sample(metrics, 'segdeploy_batch_size_bucket{le="1.0",model="%s"}' % MODEL)
    total = _sample(metrics, 'segdeploy_batch_size_count{model="%s"}' % MODEL)
    assert total > le1


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_bad_items_do_not_fail_their_batch(app, controlled):
    gray = photo(0, fmt="PNG")
    from PIL import Image

    flat = io.BytesIO()
    # 64x64 = the network input size: no resampling, so the input stays constant (poisoned)
    Image.new("RGB", (64, 64), (128, 128, 128)).save(flat, format="PNG")

    async def scenario(client):
        controlled.hold()
        controlled.poison = True
        try:
            first = asyncio.create_task(client.post(predict_url(), content=photo(2)))
            await wait_until(controlled.entered.is_set)
            batch = [asyncio.create_task(client.post(predict_url(), content=body))
                     for body in (photo(3), flat.getvalue(), gray)]
            junk = asyncio.create_task(client.post(predict_url(), content=photo(4)[:300]))  # truncated JPEG
            await wait_until(lambda: app.state.segdeploy.batchers[MODEL].depth() == 3)
            controlled.release()
            return await asyncio.gather(first, *batch, junk)
        finally:
            controlled.poison = False
            controlled.release()

    first, good, poisoned, good_png, junk = run(app, scenario)
    assert (first.status_code, good.status_code, good_png.status_code) == (200, 200, 200)
    assert poisoned.status_code == 500 and "poisoned input" in poisoned.json()["detail"]
    assert junk.status_code == 400 and "truncated" in junk.json()["detail"].lower()


def test_limits_answer_and_server_keeps_serving(app, controlled):
    from PIL import Image

    big = io.BytesIO()
    Image.new("RGB", (400, 300), (10, 200, 30)).save(big, format="PNG")  # 120 000 px > max_pixels 100 000
    bomb = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb, format="PNG")  # tiny file, 400 M pixels declared

    async def scenario(client):
        out = {}
        out["body"] = await client.post(predict_url(), content=b"\xff" * 250_000)
        out["pixels"] = await client.post(predict_url(), content=big.getvalue())
        out["bomb"] = await client.post(predict_url(), content=bomb.getvalue())
        out["garbage"] = await client.post(predict_url(), content=b"this is not an image")
        out["empty"] = await client.post(predict_url(), content=b"")
        out["no_file"] = await client.post(predict_url(), files={"other": ("a.jpg", photo(1))})
        out["model"] = await client.post(predict_url("nonexistent"), content=photo(1))
        out["output"] = await client.post(predict_url(output="svg"), content=photo(1))
        out["url"] = await client.get("/api/remove", params={"url": "http://example.com/a.jpg"})
        # timeout: a client deadline shorter than the held forward pass
        controlled.hold()
        out["timeout"] = await client.post(predict_url(), content=photo(30), headers={"X-Segdeploy-Timeout-Ms": "200"})
        controlled.release()
        out["after"] = await client.post(predict_url(), content=photo(31))
        return out

    out = run(app, scenario)
    assert out["body"].status_code == 413 and "200000 bytes" in out["body"].json()["detail"]
    assert out["pixels"].status_code == 413 and "120000 pixels" in out["pixels"].json()["detail"]
    assert out["bomb"].status_code == 413
    assert out["garbage"].status_code == 400 and "not an image" in out["garbage"].json()["detail"]
    assert out["empty"].status_code == 400 and "empty body" in out["empty"].json()["detail"]
    assert out["no_file"].status_code == 400 and "'file'" in out["no_file"].json()["detail"]
    assert out["model"].status_code == 404 and MODEL in out["model"].json()["detail"]
    assert out["output"].status_code == 400
    assert out["url"].status_code == 400 and "URL fetching is disabled" in out["url"].json()["detail"]
    assert out["timeout"].status_code == 504
    assert out["after"].status_code == 200


def test_full_queue_answers_503_with_retry_after(app, controlled):
    async def scenario(client):
        # Hold the worker, then send more than it can take: the held forward pass holds up to
        # max_batch_size (4) requests and the queue max_queue (3), so of 10 at least 3 get 503.
        controlled.hold()
        tasks = [asyncio.create_task(client.post(predict_url(), content=photo(20 + i))) for i in range(10)]
        await wait_until(lambda: sum(t.done() for t in tasks) >= 2)
        controlled.release()
        return await asyncio.gather(*tasks)

    answers = run(app, scenario)
    statuses = sorted(r.status_code for r in answers)
    assert 503 in statuses and 200 in statuses
    busy = next(r for r in answers if r.status_code == 503)
    assert int(busy.headers["retry-after"]) >= 1


def test_models_health_metrics_docs(app):
    async def scenario(client):
        return {path: await client.get(path) for path in ("/v1/models", "/healthz", "/readyz", "/metrics", "/docs",
                                                          "/openapi.json")}

    got = run(app, scenario)
    assert all(r.status_code == 200 for r in got.values())
    model = got["/v1/models"].json()["models"][0]
    assert model["name"] == MODEL and model["backend"] == "torch" and model["precision"] == "fp32"
    assert model["verified"] is True and model["fidelity"]["status"] == "pass"
    assert model["fidelity"]["images"] == 16 and model["fidelity"]["not_verified_because"] == []
    assert model["weights"]["kind"] == "random"
    assert "x-segdeploy-unverified" not in got["/healthz"].headers
    text = got["/metrics"].text
    for name in ("segdeploy_requests_total", "segdeploy_request_seconds_bucket", "segdeploy_batch_size_bucket",
                 "segdeploy_queue_depth", "segdeploy_inference_seconds_bucket"):
        assert name in text
    assert "/v1/models/{model}/predict" in got["/openapi.json"].json()["paths"]


def test_rembg_compatible_route(app):
    image = photo(5)

    async def scenario(client):
        mask = await client.post(predict_url(), content=image)
        only_mask = await client.post("/api/remove", files={"file": ("x.jpg", image)},
                                      data={"om": "true", "a": "true", "af": "240", "ppm": "true"})
        cut = await client.post("/api/remove", files={"file": ("x.jpg", image)}, data={"model": MODEL})
        green = await client.post("/api/remove?bgc=0,255,0,255", files={"file": ("x.jpg", image)})
        other = await client.post("/api/remove", files={"file": ("x.jpg", image)}, data={"model": "u2net"})
        return mask, only_mask, cut, green, other

    mask, only_mask, cut, green, other = run(app, scenario)
    from PIL import Image

    assert only_mask.status_code == 200 and only_mask.content == mask.content
    rgba = np.asarray(Image.open(io.BytesIO(cut.content)))
    assert rgba.shape == (40, 56, 4)
    opaque = np.asarray(Image.open(io.BytesIO(green.content)))
    assert (opaque[..., 3] == 255).all()
    assert other.status_code == 404


def test_api_key(app):
    state = app.state.segdeploy
    state.config.api_key = "s3cret"
    try:
        async def scenario(client):
            return (await client.get("/v1/models"), await client.get("/v1/models", headers={"X-API-Key": "nope"}),
                    await client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}),
                    await client.get("/healthz"))

        missing, wrong, good, health = run(app, scenario)
    finally:
        state.config.api_key = None
    assert (missing.status_code, wrong.status_code, good.status_code, health.status_code) == (401, 401, 200, 200)


def test_non_loopback_bind_needs_a_key(monkeypatch):
    from segdeploy.core.errors import UsageError
    from segdeploy.serve.config import resolve_api_key

    monkeypatch.delenv("SEGDEPLOY_API_KEY", raising=False)
    assert resolve_api_key("127.0.0.1", None) is None
    with pytest.raises(UsageError, match="--api-key"):
        resolve_api_key("0.0.0.0", None)
    monkeypatch.setenv("SEGDEPLOY_API_KEY", "k")
    assert resolve_api_key("0.0.0.0", None) == "k"


def test_failed_gate_refuses_to_start_unless_allowed(app, controlled, monkeypatch):
    from segdeploy.core.errors import GateFailed
    from segdeploy.serve import create_app, gate

    def failing_gate(spec, **kwargs):
        return {"status": "fail", "failures": ["d0: rel 3.1e-02 > 1e-04 (injected)"], "reason": ""}

    monkeypatch.setattr(gate, "fidelity_gate", failing_gate)
    with pytest.raises(GateFailed, match="refusing to serve"):
        create_app(MODEL, weights="random", runtime=controlled, check_images=1)
    unverified = create_app(MODEL, weights="random", runtime=controlled, check_images=1, allow_unverified=True)

    async def scenario(client):
        return await client.get("/v1/models"), await client.post(predict_url(), content=photo(1))

    models, answer = run(unverified, scenario)
    assert models.json()["models"][0]["unverified"] is True
    assert models.headers["x-segdeploy-unverified"] == "true"
    assert answer.status_code == 200 and answer.headers["x-segdeploy-unverified"] == "true"


def test_bytes_reader_matches_read_image(tmp_path):
    from PIL import Image

    from segdeploy.engine.images import read_image
    from segdeploy.serve.imaging import image_from_bytes

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (12, 17, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° on display
    cases = {
        "palette.png": (Image.fromarray(rgb).convert("P"), {}),
        "rgba.png": (Image.fromarray(np.dstack([rgb, rgb[..., 0]])), {}),
        "gray16.png": (Image.fromarray((rng.integers(0, 65535, (12, 17))).astype(np.uint16)), {}),
        "rotated.jpg": (Image.fromarray(rgb), {"exif": exif.tobytes()}),
        "cmyk.jpg": (Image.fromarray(rgb).convert("CMYK"), {}),
    }
    for name, (image, options) in cases.items():
        path = tmp_path / name
        image.save(path, **options)
        assert np.array_equal(image_from_bytes(path.read_bytes(), name), read_image(path)), name
    assert read_image(tmp_path / "rotated.jpg").shape == (17, 12, 3)


