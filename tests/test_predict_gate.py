"""A precision the user asks for is judged: `predict --precision int8` exits 3 naming the image and
the measure unless --allow-unverified, which marks every output (issue 22, Build 4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_a_failing_gate_names_the_image_and_the_measure():
    """Real fp32 outputs of a random UNet++ against the same outputs with one image's logits
    shifted: the verdict names that image and the measure, in one line."""
    from segdeploy.backends import open_runtime
    from segdeploy.core.registry import get_spec
    from segdeploy.engine.fidelity import gate_failures
    from segdeploy.verify.runtime_gate import RuntimeVerdict, _images

    spec = get_spec("unetpp_dsb2018")
    runtime = open_runtime("unetpp_dsb2018", backend="torch", precision="fp32", weights="random")
    named = _images(spec, trained=False)
    assert len(named) >= 16  # the gate's minimum
    from segdeploy.engine.transforms import preprocess_with_valid

    reference, sizes = [], []
    for _, image in named[:4]:
        chw, _ = preprocess_with_valid(image, spec)
        reference.append([np.asarray(o[0]) for o in runtime.run(chw[None])])
        sizes.append(image.shape[:2])
    candidate = [list(outs) for outs in reference]
    candidate[2] = [o + 3.0 * np.abs(o).max() for o in reference[2]]  # image 3: every logit far off
    ids = [name for name, _ in named[:4]]
    failures, _ = gate_failures(spec, "int8", reference, candidate, sizes, ids)
    verdict = RuntimeVerdict(not failures, "int8", 4, failures)
    assert not verdict.passed and ids[2] in verdict.one_line() and "\n" not in verdict.one_line()
    assert gate_failures(spec, "int8", reference, reference, sizes, ids)[0] == []


def _predict(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SEGDEPLOY_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "segdeploy.cli.main", "predict", *extra], env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_predict_int8_on_trained_u2netp_exits_3_naming_the_image_unless_allowed(tmp_path):
    """ONNX Runtime int8 (QDQ) of the trained U²-Netp fails the gate on the held-out photos
    (benchmarks/results/int8_trained_u2netp_cpu.md): nothing is written, exit 3, the failing
    image named; with --allow-unverified the masks are written and marked."""
    from PIL import Image

    from segdeploy.backends.auto import held_out_photos

    photos, calib = tmp_path / "photos", tmp_path / "calib"
    photos.mkdir()
    calib.mkdir()
    Image.fromarray(held_out_photos()[0][1]).save(photos / "astronaut.jpg")
    import skimage.data as data

    for name in ("rocket", "cat", "immunohistochemistry", "retina"):
        Image.fromarray(np.asarray(getattr(data, name)())[..., :3]).save(calib / f"{name}.jpg")
    args = ["u2netp", str(photos), "-o", str(tmp_path / "out"), "--backend", "onnxruntime", "--precision", "int8",
            "--calib", str(calib), "--quiet"]
    refused = _predict(tmp_path, *args)
    assert refused.returncode == 3, refused.stderr
    assert "gate failed" in refused.stderr and "image " in refused.stderr and "--allow-unverified" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "out").exists()
    allowed = _predict(tmp_path, *args, "--allow-unverified", "--json", str(tmp_path / "s.json"))
    assert allowed.returncode == 0, allowed.stderr
    assert "UNVERIFIED" in allowed.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert "failed the fidelity gate" in summary["runtime"]["unverified"]
    manifest = json.loads((tmp_path / "out" / ".segdeploy-manifest.json").read_text())
    assert "unverified" in json.dumps(manifest)
