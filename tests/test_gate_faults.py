"""The fp16 gate's limits were loosened to what an H200 measured (atol 5e-3 of the scale); planted
conversion faults must still fail it, on the trained U²-Netp, while the faithful model passes."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from segdeploy.backends import open_runtime  # noqa: E402
from segdeploy.convert.export import spec_with_input_size  # noqa: E402
from segdeploy.core.registry import get_spec  # noqa: E402
from segdeploy.verify.compare import CompareOptions, compare  # noqa: E402
from segdeploy.zoo import create_model  # noqa: E402

SIZE = (64, 64)


class _JudgedAsFp16:
    """An fp32 runtime presented to the gate as an fp16 candidate (the gate picks limits by precision)."""

    def __init__(self, inner, name: str):
        self.inner, self.spec, self.name, self.precision = inner, inner.spec, name, "fp16"

    def run(self, batch):
        return self.inner.run(batch)

    def describe(self):
        return {"backend": self.name, "precision": "fp16"}


def _photos(n: int = 16) -> list[np.ndarray]:
    from tests.image_zoo import photo

    return [photo(72, 90 + 2 * k, seed=k) for k in range(n)]


@pytest.fixture(scope="module")
def trained():
    spec = spec_with_input_size(get_spec("u2netp"), SIZE)
    return spec, create_model(spec, None)


def _judge(module, spec, runtimes):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        options = CompareOptions(combos=[], input_size=SIZE, batch_size=8)
        return compare(module, options=options, runtimes=runtimes, images=_photos())
    finally:
        torch.set_num_threads(before)


def _bn_eps(module, eps: float):
    faulty = copy.deepcopy(module)
    for layer in faulty.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.eps = eps
    return faulty


def test_planted_faults_fail_the_fp16_gate_and_the_faithful_model_passes(trained):
    spec, module = trained
    faithful = _JudgedAsFp16(open_runtime(module, backend="torch", precision="fp32", spec=spec), "faithful")
    # TensorFlow's BatchNorm default (1e-3) where the checkpoint was trained with PyTorch's 1e-5
    wrong_eps = _JudgedAsFp16(open_runtime(_bn_eps(module, 1e-3), backend="torch", precision="fp32", spec=spec),
                              "bn-eps-1e-3")
    nearest = dataclasses.replace(spec, preprocess=dataclasses.replace(spec.preprocess, interpolation="nearest",
                                                                        resize_library="pil"))
    wrong_resize = _JudgedAsFp16(open_runtime(module, backend="torch", precision="fp32", spec=nearest), "nearest")
    no_norm = dataclasses.replace(spec, preprocess=dataclasses.replace(spec.preprocess, mean=None, std=None))
    dropped = _JudgedAsFp16(open_runtime(module, backend="torch", precision="fp32", spec=no_norm), "no-mean-std")
    report = _judge(module, spec, [faithful, wrong_eps, wrong_resize, dropped])
    rows = {row.backend.split(":", 1)[-1]: row for row in report.rows}
    assert rows["faithful"].status == "pass", rows["faithful"].failures
    for name in ("bn-eps-1e-3", "nearest", "no-mean-std"):
        assert rows[name].status == "fail", (name, rows[name].summary)
        assert rows[name].gate.precision == "fp16"
        assert any(f.startswith("image ") for f in rows[name].failures)
