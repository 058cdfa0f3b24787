"""VERIFIED means one thing: a passed gate naming the served artifact, weights and preprocessing,
over >= 16 named images (real photos for trained weights), under the default thresholds.
Everything else refuses to start, or serves marked with --allow-unverified."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.test_serve_support import MODEL, free_port, photo

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

OFFICIAL = Path(__file__).resolve().parents[1] / "src" / "segdeploy" / "assets" / "weights" / "u2netp_official.safetensors"


@pytest.fixture(scope="module")
def torch_runtime(plugin_dir):
    from segdeploy.backends import open_runtime

    return open_runtime(MODEL, backend="torch", weights="random", seed=0)


def _checks():
    from segdeploy.serve import gate

    return [(f"generated:{i}", image) for i, image in enumerate(gate.check_images(16, (32, 48)))]


def _report(path: Path, backend="torch", **options) -> Path:
    from segdeploy.verify.compare import CompareOptions, compare, write_report

    report = compare(MODEL, weights="random", options=CompareOptions(combos=[(backend, "fp32")], **options),
                     images=_checks())
    write_report(report, path)
    return path


def _get(app, path="/v1/models"):
    async def scenario():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=120) as client:
                return await client.get(path), await client.post(f"/v1/models/{MODEL}/predict", content=photo(1))

    return asyncio.run(scenario())


def test_a_real_report_verifies_and_a_forged_one_line_json_does_not(torch_runtime, tmp_path):
    from segdeploy.core.errors import GateFailed
    from segdeploy.serve import create_app

    good = create_app(MODEL, weights="random", runtime=torch_runtime, reference=_report(tmp_path / "real.json"),
                      max_batch_size=1)
    service = good.state.segdeploy.services[MODEL]
    assert service.verified and service.fidelity["not_verified_because"] == []

    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps({"model": MODEL, "rows": [{"backend": "torch", "precision": "fp32", "status": "pass"}]}))
    with pytest.raises(GateFailed, match="not verified"):
        create_app(MODEL, weights="random", runtime=torch_runtime, reference=forged, max_batch_size=1)
    marked = create_app(MODEL, weights="random", runtime=torch_runtime, reference=forged, allow_unverified=True,
                        max_batch_size=1)
    models, answer = _get(marked)
    why = " ".join(models.json()["models"][0]["fidelity"]["not_verified_because"])
    assert "weights' fingerprint" in why and "preprocessing" in why and "fewer than 16" in why and "thresholds" in why
    assert models.json()["models"][0]["verified"] is False
    assert answer.status_code == 200 and answer.headers["x-segdeploy-unverified"] == "true"


def test_a_report_under_loosened_tolerance_never_verifies(torch_runtime, tmp_path):
    from segdeploy.core.errors import GateFailed
    from segdeploy.serve import create_app

    loose = _report(tmp_path / "loose.json", tolerances={"mask_iou": 0.5})
    assert json.loads(loose.read_text())["rows"][0]["status"] == "pass"
    with pytest.raises(GateFailed, match="thresholds other than the defaults"):
        create_app(MODEL, weights="random", runtime=torch_runtime, reference=loose, max_batch_size=1)


def test_a_report_on_another_artifact_does_not_verify_the_served_file(plugin_dir, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    import onnx

    from segdeploy.convert.export_cache import cached_export
    from segdeploy.core.errors import GateFailed
    from segdeploy.serve import create_app

    monkeypatch.setenv("SEGDEPLOY_CACHE", str(tmp_path / "cache"))
    exported = Path(cached_export(MODEL, "random", seed=0))
    other = tmp_path / "other.onnx"  # the same network in another file (another export, an edited copy ...)
    model = onnx.load(str(exported))
    model.doc_string = "another file"
    onnx.save(model, str(other))
    report = _report(tmp_path / "ort.json", backend="onnxruntime", onnx_path=exported)
    options = dict(weights="random", backend="onnxruntime", reference=report, max_batch_size=1)
    served = create_app(MODEL, onnx_path=exported, **options).state.segdeploy.services[MODEL]
    assert served.verified
    with pytest.raises(GateFailed, match="does not name the served artifact"):
        create_app(MODEL, onnx_path=other, **options)


def test_fewer_than_16_check_images_never_verify(plugin_dir, monkeypatch, capsys):
    import uvicorn

    from segdeploy.cli.main import main

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app))
    argv = ["serve", MODEL, "--weights", "random", "--backend", "torch", "--port", str(free_port()),
            "--check-images", "1", "--check-size", "32x32", "--max-batch-size", "1"]
    assert main(argv) == 3 and not served
    assert "fewer than 16" in capsys.readouterr().err
    assert main(argv + ["--allow-unverified"]) == 0
    assert "UNVERIFIED" in capsys.readouterr().err
    models, answer = _get(served["app"])
    assert models.json()["models"][0]["verified"] is False
    assert answer.headers["x-segdeploy-unverified"] == "true"


def test_trained_weights_are_judged_on_the_packaged_photos(plugin_dir):
    from segdeploy.serve import create_app, gate

    app = create_app(MODEL, weights=str(OFFICIAL), backend="torch", check_images=16, check_size=(32, 48),
                     max_batch_size=1)
    fidelity = app.state.segdeploy.services[MODEL].fidelity
    names = {j["name"] for j in fidelity["judged"]}
    assert app.state.segdeploy.services[MODEL].verified
    assert {"photo:chelsea.jpg", "photo:chelsea.jpg#1", "photo:astronaut.jpg"} <= names
    assert len(names) >= 16 and not any(name.startswith("generated:") for name in names)

    # a verdict on trained weights without those photos does not verify, whatever else it names
    summary = {**fidelity, "judged": [j for j in fidelity["judged"] if "chelsea" not in j["name"]]
               + [{"name": f"g{i}", "image_id": f"{i:064x}"} for i in range(4)]}
    why = gate.acceptance(summary, weights_fp=fidelity["weights"]["state_dict_sha256"],
                          preprocessing_fp=fidelity["preprocessing"], artifact_sha256=None,
                          required_ids=gate.required_photo_ids(16, trained=True))
    assert why and "real photos" in why[0]


@pytest.mark.slow
def test_int8_that_passes_on_synthetic_images_fails_the_photo_gate(tmp_path, monkeypatch):
    """The trained u2netp's int8 calibrated on synthetic images: the gate on 16 generated images
    passes, the start-up gate (photos) refuses it."""
    pytest.importorskip("onnxruntime")
    from segdeploy.convert.quantize import quantize_onnx
    from segdeploy.core.errors import GateFailed
    from segdeploy.serve import create_app, gate

    monkeypatch.setenv("SEGDEPLOY_CACHE", str(tmp_path / "cache"))
    synthetic = gate.check_images(32, (240, 320), seed=7)
    int8 = tmp_path / "u2netp.int8.onnx"
    quantize_onnx("u2netp", str(OFFICIAL), synthetic[16:], int8)
    generated = [(f"generated:{i}", image) for i, image in enumerate(synthetic[:16])]
    on_synthetic = gate.fidelity_gate(_spec("u2netp"), weights=str(OFFICIAL), backend="onnxruntime",
                                      precision="int8", onnx_path=int8, images=generated)
    assert on_synthetic["status"] == "pass", on_synthetic["failures"]
    with pytest.raises(GateFailed, match="photo:") as refused:
        create_app("u2netp", weights=str(OFFICIAL), backend="onnxruntime", precision="int8", onnx_path=int8,
                   max_batch_size=1)
    assert "the gate did not pass (fail: " in str(refused.value)


def _spec(name):
    from segdeploy.core.registry import get_spec

    return get_spec(name)
