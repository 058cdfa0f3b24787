"""One fidelity gate: ``--backend auto`` opened by a Ray worker or by the server judges its candidates
with the thresholds ``segdeploy compare`` (the CLI) uses, with nothing installed first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

from segdeploy.core.registry import register_model, unregister_model
from segdeploy.core.specs import Decode, ModelSpec, Preprocess
from segdeploy.engine import fidelity, gate
from segdeploy.verify import compare

ROOT = Path(__file__).resolve().parents[1]
MODEL = "gate_probe_tiny"


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 1))


@pytest.fixture(autouse=True)
def tiny_model():
    """A two-layer binary model at 32 x 32: the probe takes seconds, not minutes."""
    register_model(ModelSpec(name=MODEL, title="two-layer probe model", task="binary", num_classes=1, builder=_tiny,
                             preprocess=Preprocess(size=(32, 32), scaling="div255", mean=(0.5,) * 3, std=(0.5,) * 3),
                             decode=Decode(activation="sigmoid", threshold=0.5), input_size=(32, 32),
                             output_names=("logits",)))
    yield
    unregister_model(MODEL)


@pytest.fixture
def gates_used(monkeypatch, tmp_path):
    """Every Gate the auto probe and compare take, as (who, task, precision, gate); probing on, in a
    fresh cache, fp32 candidates only (no quantization)."""
    monkeypatch.setenv("SEGDEPLOY_AUTO_PROBE", "1")
    monkeypatch.setenv("SEGDEPLOY_AUTO_INT8", "0")
    monkeypatch.setenv("SEGDEPLOY_CACHE", str(tmp_path / "cache"))
    used = []

    def recording(who):
        def default_gate(task, precision):
            result = gate.default_gate(task, precision)
            used.append((who, task, precision, result))
            return result
        return default_gate

    # the timed probe of every candidate (an empty cache alone gets auto's quick choice, judged on nothing)
    import functools

    from segdeploy.backends import auto_probe

    monkeypatch.setattr(auto_probe, "choose_auto", functools.partial(auto_probe.choose_auto, full=True))
    monkeypatch.setattr(fidelity, "default_gate", recording("auto"))
    monkeypatch.setattr(compare, "default_gate", recording("compare"))
    return used


def _judged_by_auto(used, precision="fp32"):
    return [g for who, task, p, g in used if who == "auto" and p == precision]


def test_a_ray_worker_judges_auto_with_the_cli_gate(gates_used):
    from segdeploy.jobs.options import RuntimeRequest
    from segdeploy.scale.workers import PredictActor

    actor = PredictActor(MODEL, RuntimeRequest(backend="auto", weights="random", precision="fp32"), 1,
                         cutout=False, save_prob=False)
    assert actor.runtime.selection["source"] == "probe"
    judged = _judged_by_auto(gates_used)
    assert judged, "the probe judged no candidate"
    assert all(g == gate.default_gate("binary", "fp32") for g in judged)


def test_the_server_judges_auto_and_its_choice_with_the_cli_gate(gates_used):
    from segdeploy.serve.config import ServeConfig
    from segdeploy.jobs.options import RuntimeRequest
    from segdeploy.serve.service import ModelService

    service = ModelService.load(MODEL, RuntimeRequest(weights="random", backend="auto", precision="fp32"),
                                config=ServeConfig(check_images=16, check_size=(32, 40), max_batch_size=1))
    assert service.runtimes[0].selection["source"] == "probe"
    auto_gates = _judged_by_auto(gates_used)
    compare_gates = [g for who, _, p, g in gates_used if who == "compare"]
    assert auto_gates and compare_gates
    cli_gate = gate.default_gate("binary", "fp32")
    assert all(g == cli_gate for g in auto_gates + compare_gates)


def test_no_module_installs_a_gate():
    proc = subprocess.run(["grep", "-rn", "--include=*.py", r"set_fidelity_gate\|_GATE\|auto_gate", str(ROOT / "src")],
                          capture_output=True, text=True)
    assert proc.stdout == ""
