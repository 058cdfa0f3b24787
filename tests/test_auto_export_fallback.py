"""auto on a model whose ONNX export fails its parity check (issue 22): the command says so and runs
PyTorch fp32, instead of failing or running an export that computes something else."""

import numpy as np
import pytest
import torch
from torch import nn

import segdeploy
from segdeploy import Decode, ModelSpec, Preprocess
from segdeploy.core.registry import unregister_model

pytest.importorskip("onnxruntime")


class NoisySeg(nn.Module):
    """One conv plus noise drawn inside ``forward``: the export carries a RandomUniformLike node whose
    draws differ from PyTorch's, so no ONNX runtime can reproduce it and the parity check fails."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x) + 4.0 * torch.rand_like(x[:, :1])


@pytest.fixture(scope="module")
def noisy_model():
    segdeploy.register_model(ModelSpec(
        name="noisyseg-test", title="conv + in-forward noise (auto fallback test)", task="binary", num_classes=1,
        builder=NoisySeg, preprocess=Preprocess(size=(32, 32), scaling="div255", mean=(0.5,) * 3, std=(0.5,) * 3),
        decode=Decode(activation="sigmoid", threshold=0.5), input_size=(32, 32), output_names=("logits",),
        source="segdeploy tests", license="Apache-2.0"), replace=True)
    yield "noisyseg-test"
    unregister_model("noisyseg-test")


def test_auto_says_the_export_failed_its_parity_check_and_runs_pytorch(noisy_model, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SEGDEPLOY_CACHE", str(tmp_path / "cache"))
    from segdeploy.backends import open_runtime

    runtime = open_runtime(noisy_model, backend="auto", weights="random")
    said = capsys.readouterr().err
    assert runtime.selection["backend"] == "torch" and runtime.selection["precision"] == "fp32"
    assert "parity check" in runtime.selection["why"] and "parity check" in said
    outputs = runtime.run(np.zeros((1, 3, 32, 32), np.float32))
    assert np.asarray(outputs[0]).shape == (1, 1, 32, 32)
