"""``--backend auto``: the gate adapter, the choice rule, the probe cache and the static fallback."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segdeploy.backends import auto, auto_probe
from segdeploy.backends.auto import AutoChoice, ProbeRow, generated_images, static_choice
from segdeploy.engine.fidelity import fidelity_gate
from segdeploy.engine.gate import default_gate
from segdeploy.core.registry import get_spec

SAL = get_spec("u2netp")
BIN = get_spec("unetpp_dsb2018")


def _outputs(logits: np.ndarray, count: int) -> list[np.ndarray]:
    return [logits[None].astype(np.float32)] * count


def test_gate_fp32_judges_the_tensor_error_of_the_decoded_output():
    rng = np.random.default_rng(0)
    ref = [_outputs(rng.standard_normal((32, 32)), 7) for _ in range(3)]
    same = [[o + 1e-7 for o in image] for image in ref]
    ok, _, reason = fidelity_gate(SAL, "fp32", ref, same, [(32, 32)] * 3)
    assert ok, reason
    far = [[o * 1.05 for o in image] for image in ref]
    ok, _, reason = fidelity_gate(SAL, "fp32", ref, far, [(32, 32)] * 3)
    assert not ok and "tensor error" in reason


def test_gate_saliency_low_precision_measures_map_mae_and_iou():
    yy, xx = np.mgrid[0:40, 0:40]
    blob = ((yy - 20) ** 2 + (xx - 20) ** 2 < 100).astype(np.float64) * 0.9 + 0.05
    ref = [_outputs(blob, 7)]
    ok, measures, reason = fidelity_gate(SAL, "bf16", ref, [_outputs(blob + 0.002, 7)], [(40, 40)])
    assert ok and measures["mask_iou_worst"] > 0.99, reason
    # Only one output (d0) is decoded: damage to a side output is not judged.
    side_damaged = [[blob[None].astype(np.float32)] + [np.zeros((1, 40, 40), np.float32)] * 6]
    assert fidelity_gate(SAL, "bf16", ref, side_damaged, [(40, 40)])[0]
    shifted = np.roll(blob, 6, axis=1)
    ok, measures, reason = fidelity_gate(SAL, "int8", ref, [_outputs(shifted, 7)], [(40, 40)])
    assert not ok and measures["mask_iou_worst"] < 0.85 and "mask_iou" in reason


def test_gate_binary_uses_the_mask_iou_bounds_of_the_precision():
    logits = np.full((48, 48), -5.0)
    logits[10:30, 10:30] = 5.0
    out = logits.copy()
    out[10:30, 29] = -5.0  # one column of 20 lost: IoU 380/400 = 0.95
    ref, cand = [[logits[None].astype(np.float32)]], [[out[None].astype(np.float32)]]
    assert default_gate("binary", "int8").measures["mask_iou"].quantile == 0.90
    assert fidelity_gate(BIN, "int8", ref, cand, [(48, 48)])[0]
    assert default_gate("binary", "fp16").measures["mask_iou"].quantile == 0.98
    ok, measures, reason = fidelity_gate(BIN, "fp16", ref, cand, [(48, 48)])
    assert not ok and measures["mask_iou_quantile"] == pytest.approx(0.95) and "mask_iou" in reason


def test_auto_probe_judges_with_the_one_gate_compare_uses():
    from segdeploy.engine import fidelity
    from segdeploy.verify import compare

    assert auto_probe.fidelity_gate is fidelity.fidelity_gate
    assert compare.default_gate is fidelity.default_gate
    assert not hasattr(auto, "set_fidelity_gate")


def test_decide_takes_the_fastest_passing_row_never_a_failing_one():
    rows = [ProbeRow("openvino", "bf16", None, "fail", 9.0, reason="map MAE 0.019 > 0.01"),
            ProbeRow("openvino", "int8", "ort-qdq", "fail", 14.0, reason="mask IoU 0.80 < 0.9"),
            ProbeRow("openvino", "fp32", None, "pass", 4.5),
            ProbeRow("onnxruntime", "fp32", None, "pass", 3.9),
            ProbeRow("onnxruntime", "int8", "ort-qdq", "error", None, reason="boom")]
    best = auto_probe.decide(rows)
    assert (best.backend, best.precision) == ("openvino", "fp32")
    why = auto_probe.explain(best, rows)
    # one line: the failing configurations named, their measures in the table
    assert "openvino bf16" in why and "openvino int8 (ort-qdq)" in why and "map MAE" not in why
    choice = AutoChoice(best.backend, best.precision, why, "probe", table=rows)
    assert any("map MAE" in line for line in auto_probe.table_lines(choice))
    with pytest.raises(ValueError):
        auto_probe.decide([r for r in rows if r.status != "pass"])


def test_static_choice_is_fp32_and_says_why():
    choice = static_choice("cpu")
    assert choice.precision == "fp32" and choice.source == "static" and "probing is off" in choice.why
    assert static_choice("cpu", "int8").backend in ("openvino", "onnxruntime")


def test_probe_is_cached_per_key_and_reused(monkeypatch, tmp_path):
    from segdeploy.zoo import create_model

    monkeypatch.setenv("SEGDEPLOY_CACHE", str(tmp_path))
    monkeypatch.setenv("SEGDEPLOY_AUTO_PROBE", "1")
    calls = []

    def fake_probe(module, spec, device="cpu", precision=None, **kwargs):
        calls.append(spec.name)
        return [ProbeRow("torch", "fp32", None, "pass", 2.0, reason="the reference"),
                ProbeRow("openvino", "fp32", None, "pass", 5.0),
                ProbeRow("openvino", "bf16", None, "fail", 8.0, reason="map MAE 0.02 > 0.01")]

    monkeypatch.setattr(auto_probe, "probe", fake_probe)
    module = create_model("unetpp_dsb2018", "random")
    first = auto_probe.choose_auto(module, BIN, "cpu", full=True)
    assert (first.backend, first.precision, first.source) == ("openvino", "fp32", "probe")
    saved = json.loads((tmp_path / "auto" / first.cache_path.split("/")[-1]).read_text())
    assert saved["key"]["weights"] == "random:0" and saved["key"]["machine"]["cores"] >= 1
    assert {"torch", "openvino"} <= set(saved["key"]["libraries"])
    second = auto_probe.choose_auto(module, BIN, "cpu")
    assert second.source == "cache" and second.backend == "openvino" and calls == ["unetpp_dsb2018"]
    assert auto_probe.choose_auto(module, BIN, "cpu", full=True).source == "cache"  # a probe's choice is final
    # Other weights are another key: probed again.
    auto_probe.choose_auto(create_model("unetpp_dsb2018", "random", seed=1), BIN, "cpu", full=True)
    assert len(calls) == 2
    lines = auto_probe.table_lines(second)
    assert any("← chosen" in line and "openvino fp32" in line for line in lines)


def test_open_runtime_auto_records_the_choice_and_its_table(monkeypatch, tmp_path):
    from segdeploy.backends import open_runtime
    from segdeploy.zoo import create_model

    monkeypatch.setenv("SEGDEPLOY_CACHE", str(tmp_path))
    monkeypatch.setenv("SEGDEPLOY_AUTO_PROBE", "1")
    rows = [ProbeRow("torch", "fp32", None, "pass", 1.0, reason="the reference"),
            ProbeRow("onnxruntime", "fp32", None, "pass", 3.0)]
    monkeypatch.setattr(auto_probe, "probe", lambda *a, **k: rows)
    # An empty cache: the quick choice, fp32 on the first engine installed, never the probe.
    rt = open_runtime("unetpp_dsb2018", "auto", weights="random")
    assert rt.precision == "fp32" and rt.selection["source"] == "quick" and rt.selection["digest"]
    # The full probe on request (segdeploy auto) replaces it; every later open reads it back.
    auto_probe.choose_auto(create_model("unetpp_dsb2018", "random"), BIN, "cpu", full=True)
    rt = open_runtime("unetpp_dsb2018", "auto", weights="random")
    assert rt.name == "onnxruntime" and rt.precision == "fp32"
    sel = rt.selection
    assert sel["source"] == "cache" and sel["made_by"] == "probe" and sel["backend"] == "onnxruntime"
    assert len(sel["table"]) == 2
    # Probing off: the static choice, no table.
    monkeypatch.setenv("SEGDEPLOY_AUTO_PROBE", "0")
    rt = open_runtime("unetpp_dsb2018", "auto", weights="random")
    assert rt.selection["source"] == "static" and rt.selection["precision"] == "fp32"


def test_an_edited_cached_choice_is_said_and_chosen_again(monkeypatch, tmp_path, capsys):
    """Issue 23: a cached choice is evidence. Editing its JSON (here: int8 instead of fp32) breaks
    its digest; auto says so and chooses again instead of running what the file says."""
    from segdeploy.zoo import create_model

    monkeypatch.setenv("SEGDEPLOY_CACHE", str(tmp_path))
    monkeypatch.setenv("SEGDEPLOY_AUTO_PROBE", "1")
    module = create_model("unetpp_dsb2018", "random")
    messages: list[str] = []
    first = auto_probe.choose_auto(module, BIN, "cpu", progress=messages.append)
    assert first.made_by == "quick" and first.precision == "fp32" and first.digest
    path = tmp_path / "auto" / first.cache_path.split("/")[-1]
    data = json.loads(path.read_text())
    data["precision"], data["why"] = "int8", "trust me"
    path.write_text(json.dumps(data))
    again = auto_probe.choose_auto(module, BIN, "cpu", progress=messages.append)
    assert again.precision == "fp32" and again.source == "quick"
    assert any("does not verify" in m and "digest" in m for m in messages), messages
    # Re-written with a fresh digest: read back from the cache now.
    assert auto_probe.choose_auto(module, BIN, "cpu").source == "cache"
    # An artifact swapped under a cached choice does not verify either.
    artifact = tmp_path / "model.xml"
    artifact.write_text("<net/>")
    artifact.with_suffix(".bin").write_bytes(b"judged")
    from segdeploy.backends.auto_cache import load_choice, save_choice

    choice = AutoChoice("openvino", "int8", "judged", "probe", artifact=str(artifact), key=first.key,
                        made_by="probe")
    save_choice(choice, path)
    assert load_choice(path, first.key)[0] is not None
    artifact.with_suffix(".bin").write_bytes(b"other")
    loaded, problem = load_choice(path, first.key)
    assert loaded is None and "not the one that was judged" in problem


def test_generated_images_are_deterministic_and_photo_like():
    a = generated_images(3, 24, 32, seed=5)
    b = generated_images(3, 24, 32, seed=5)
    c = generated_images(3, 24, 32, seed=6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert a[0].dtype == np.uint8 and a[0].shape == (24, 32, 3) and a[0].std() > 5


def test_choice_round_trips_through_json():
    choice = AutoChoice("openvino", "int8", "why", "probe", quantizer="nncf", artifact="/x.xml",
                        table=[ProbeRow("openvino", "int8", "nncf", "pass", 12.0, {"mask_iou": 0.97})])
    back = AutoChoice.from_dict(json.loads(json.dumps(choice.to_dict())))
    assert back == choice


@pytest.mark.slow
def test_real_probe_on_a_small_model(monkeypatch, tmp_path):
    """The whole probe on unetpp_dsb2018 (96²), without int8 (quantizing is slow on 2 cores)."""
    from segdeploy.zoo import create_model

    monkeypatch.setenv("SEGDEPLOY_CACHE", str(tmp_path))
    monkeypatch.setenv("SEGDEPLOY_AUTO_PROBE", "1")
    monkeypatch.setenv("SEGDEPLOY_AUTO_INT8", "0")
    monkeypatch.setattr(auto_probe, "PROBE_SECONDS", 0.1)
    choice = auto_probe.choose_auto(create_model("unetpp_dsb2018", "random"), BIN, "cpu", full=True)
    statuses = {r.label: r.status for r in choice.table}
    assert statuses["torch fp32"] == "pass" and statuses["onnxruntime fp32"] == "pass"
    chosen = next(r for r in choice.table if (r.backend, r.precision) == (choice.backend, choice.precision))
    assert chosen.status == "pass"
    assert chosen.images_per_s == max(r.images_per_s for r in choice.table if r.status == "pass")


def test_auto_drops_options_of_other_backends_and_says_so(monkeypatch):
    from segdeploy.backends import open_runtime

    monkeypatch.setenv("SEGDEPLOY_AUTO_PROBE", "0")
    rt = open_runtime("unetpp_dsb2018", "auto", weights="random", mode="compile", channels_last=True)
    if rt.name == "torch":
        pytest.skip("no ONNX backend installed: auto picked torch, whose options these are")
    assert rt.selection["ignored_options"] == ["channels_last", "mode"]


def test_auto_runs_openvino_with_one_stream_per_core_and_times_it_so(monkeypatch):
    """auto opens OpenVINO with streams = physical cores (so the pipeline keeps that many calls in
    flight), records it on the selection, and lets an explicit option win."""
    from segdeploy.backends import available_backends, open_runtime
    from segdeploy.backends.auto import auto_options
    from segdeploy.backends.base import physical_cores

    assert auto_options("onnxruntime") == {} and auto_options("openvino", "cuda") == {}
    if physical_cores() < 2 or available_backends()["openvino"] is not None:
        pytest.skip("needs OpenVINO and at least 2 physical cores")
    assert auto_options("openvino") == {"streams": physical_cores()}
    assert auto_options("openvino", threads=1) == {}  # a 1-CPU Ray worker: one stream
    monkeypatch.setenv("SEGDEPLOY_AUTO_PROBE", "0")
    rt = open_runtime("unetpp_dsb2018", "auto", weights="random")
    assert rt.name == "openvino" and rt.concurrent_calls == physical_cores()
    assert rt.selection["options"] == {"streams": physical_cores()}
    assert open_runtime("unetpp_dsb2018", "auto", weights="random", streams=1).concurrent_calls == 1
    # The probe times such a runtime with that many calls at once.
    import threading
    import time

    active, peak, lock = [0], [0], threading.Lock()

    class Fake:
        spec = rt.spec
        concurrent_calls = 2

        def run(self, x, outputs=None):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.01)
            with lock:
                active[0] -= 1
            return [x]

    ips = auto_probe.time_runtime(Fake(), (1, 3, 96, 96), seconds=0.1, min_calls=3)
    assert peak[0] == 2 and 100 < ips < 250  # two 10 ms calls at a time: ~200 images/s, not ~100


def test_trained_weights_are_also_judged_on_the_packaged_real_photos(monkeypatch):
    """The probe judges trained weights on the package's photos too (synthetic-calibrated int8 can
    pass on generated images and fail on a real one); random weights on generated images only."""
    from segdeploy.backends.auto import bundled_photos, judged_description
    from segdeploy.zoo import create_model

    photos = bundled_photos(48, 64)
    assert len(photos) >= 5 and all(p.shape == (48, 64, 3) and p.dtype == np.uint8 for p in photos)
    assert judged_description(16) == "16 generated images"
    assert judged_description(21) == "16 generated images and 5 real photos"
    seen = {}

    def fake_gate(spec, precision, reference, outputs, sizes):
        seen["images"] = len(outputs)
        return True, {}, ""

    monkeypatch.setattr(auto_probe, "fidelity_gate", fake_gate)
    monkeypatch.setattr(auto_probe, "candidates_for", lambda device, precision: [
        auto_probe.Candidate("torch", "fp32"), auto_probe.Candidate("onnxruntime", "fp32")])
    monkeypatch.setattr(auto_probe, "PROBE_SECONDS", 0.01)
    module = create_model("unetpp_dsb2018", "random")
    rows = auto_probe.probe(module, BIN)
    assert seen["images"] == 16 and rows[-1].judged == 16
    monkeypatch.setattr(auto_probe, "_weights_id", lambda m: "sha256:abc")
    rows = auto_probe.probe(module, BIN)
    assert seen["images"] == 16 + len(photos) and rows[-1].judged == 16 + len(photos)


@pytest.mark.slow
def test_an_export_failing_parity_under_auto_says_so_and_runs_pytorch(monkeypatch, tmp_path, capsys):
    """Issue 22: where the ONNX export of the quick choice fails its parity check (here made to
    fail by a zero tolerance), auto says so in one line and runs PyTorch fp32 — and caches that."""
    import dataclasses

    import segdeploy.convert.export_cache as export_cache
    import segdeploy.convert.parity as parity
    from segdeploy.backends import open_runtime

    monkeypatch.setenv("SEGDEPLOY_CACHE", str(tmp_path))
    monkeypatch.setenv("SEGDEPLOY_AUTO_PROBE", "1")
    monkeypatch.setattr(parity, "PARITY_ATOL", -1.0)
    real_export = export_cache.export_onnx

    def export_with_no_tolerance(model, weights, path, options, **kwargs):
        return real_export(model, weights, path, dataclasses.replace(options, parity_rtol=-1.0), **kwargs)

    monkeypatch.setattr(export_cache, "export_onnx", export_with_no_tolerance)
    rt = open_runtime("unetpp_dsb2018", "auto", weights="random")
    err = capsys.readouterr().err
    assert rt.name == "torch" and rt.selection["backend"] == "torch"
    assert "parity check" in err and "PyTorch fp32" in err and "Traceback" not in err
    assert "parity check" in rt.selection["why"]
    again = open_runtime("unetpp_dsb2018", "auto", weights="random")
    assert again.name == "torch" and again.selection["source"] == "cache"
    assert "parity" not in capsys.readouterr().err  # not exported again


def test_segdeploy_auto_command_makes_shows_and_verifies_the_cached_choice(monkeypatch, tmp_path, capsys):
    from segdeploy.cli.main import main

    monkeypatch.setenv("SEGDEPLOY_CACHE", str(tmp_path))
    assert main(["auto", "unetpp_dsb2018", "--weights", "random", "--show"]) == 0
    assert "no cached choice" in capsys.readouterr().err
    assert main(["auto", "unetpp_dsb2018", "--weights", "random", "--quick", "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "auto → " in out and "fp32" in out and "cached: " in out
    made = json.loads((tmp_path / "c.json").read_text())
    assert made["made_by"] == "quick" and made["digest"]
    assert main(["auto", "unetpp_dsb2018", "--weights", "random", "--show"]) == 0
    assert f"auto → {made['backend']} fp32" in capsys.readouterr().out
