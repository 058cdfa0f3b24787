"""References that travel: --save-reference in one process, --reference in another, same verdict;
references from other weights or preprocessing refused by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from segdeploy.cli.main import main
from segdeploy.core.errors import UsageError

MODEL = ["unetpp_dsb2018", "--weights", "random", "--input-size", "32", "--batch-size", "4", "--quiet"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    from segdeploy.engine.writers import write_png
    from tests.image_zoo import photo

    folder = tmp_path_factory.mktemp("photos")
    for k in range(16):
        write_png(folder / f"p{k:02d}.png", photo(40, 48 + 2 * k, seed=k))
    return folder


@pytest.fixture(scope="module")
def saved(photos, tmp_path_factory) -> Path:
    """A reference written by another Python process through the CLI."""
    import torch

    torch.set_num_threads(1)  # 2 shared cores: a second intra-op thread only spins
    ref = tmp_path_factory.mktemp("ref") / "ref.npz"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{root}", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "segdeploy.cli.main", "compare", *MODEL, "--images", str(photos),
                           "--backends", "torch", "--precisions", "fp32", "--save-reference", str(ref)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return ref


def _rows(path: Path) -> list[dict]:
    data = json.loads(path.read_text())
    return [{k: r[k] for k in ("backend", "precision", "status", "failures", "summary")} for r in data["rows"]]


def _nearest_fault(module, spec):
    """fp32 PyTorch whose preprocessing resizes with nearest instead of bilinear: fails the gate."""
    import dataclasses

    from segdeploy.backends import open_runtime

    nearest = dataclasses.replace(spec, preprocess=dataclasses.replace(spec.preprocess, interpolation="nearest"))
    return open_runtime(module, backend="torch", precision="fp32", spec=nearest)


def _verdict(report) -> list[tuple]:
    return [(r.backend, r.precision, r.status, r.failures, json.dumps(r.summary, sort_keys=True)) for r in report.rows]


def test_reference_from_another_process_gives_the_direct_verdict(photos, saved, tmp_path):
    from segdeploy.convert.export import spec_with_input_size
    from segdeploy.core.registry import get_spec
    from segdeploy.verify.compare import CompareOptions, compare
    from segdeploy.zoo import create_model

    spec = spec_with_input_size(get_spec("unetpp_dsb2018"), (32, 32))
    module = create_model(spec, "random")
    kwargs = dict(combos=[("torch", "fp32")], input_size=(32, 32), batch_size=4)
    direct = compare(module, options=CompareOptions(**kwargs), runtimes=[_nearest_fault(module, spec)],
                     images=str(photos))
    judged = compare(module, options=CompareOptions(reference=saved, **kwargs), runtimes=[_nearest_fault(module, spec)],
                     images=str(photos))
    assert [r.status for r in direct.rows] == ["pass", "fail"]
    assert _verdict(judged) == _verdict(direct)  # same statuses, failures (image + measure) and measures
    assert judged.exit_code() == direct.exit_code() == 3
    assert judged.reference["file"] == str(saved) and direct.reference["file"] is None

    # The CLI the same way: exit 0 for the passing row, from the reference file.
    out = tmp_path / "judged.json"
    assert main(["compare", *MODEL, "--images", str(photos), "--backends", "torch", "--precisions", "fp32",
                 "--reference", str(saved), "--json", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["status"] == "pass" and len(row["images"]) == 16


def test_reference_file_holds_ids_outputs_and_fingerprints(saved, photos):
    from segdeploy.core.registry import get_spec
    from segdeploy.convert.export import spec_with_input_size
    from segdeploy.engine.images import read_image
    from segdeploy.verify.reference import Reference, image_id, preprocessing_fingerprint

    ref = Reference.load(saved)
    spec = spec_with_input_size(get_spec("unetpp_dsb2018"), (32, 32))
    assert ref.model == "unetpp_dsb2018" and ref.outputs == ["logits"] and len(ref.images) == 16
    assert ref.preprocessing == preprocessing_fingerprint(spec) and len(ref.weights) == 64
    first = sorted(photos.glob("*.png"))[0]
    assert ref.images[0].id == image_id(read_image(first))
    assert ref.images[0].outputs["logits"].shape == (1, 32, 32)
    assert ref.meta["made_with"].startswith("PyTorch")


def test_reference_from_other_weights_is_refused_naming_weights(saved, photos):
    from segdeploy.verify.compare import CompareOptions, compare

    options = CompareOptions(seed=1, combos=[("torch", "fp32")], input_size=(32, 32), reference=saved)
    with pytest.raises(UsageError, match=r"made with other weights \(sha256") as info:
        compare("unetpp_dsb2018", "random", options, images=str(photos))
    assert "preprocessing/decoding" not in str(info.value)


def test_reference_from_other_preprocessing_is_refused_naming_it(saved, photos):
    from segdeploy.verify.compare import CompareOptions, compare

    options = CompareOptions(combos=[("torch", "fp32")], input_size=(48, 48), reference=saved)
    with pytest.raises(UsageError, match="made with other preprocessing/decoding") as info:
        compare("unetpp_dsb2018", "random", options, images=str(photos))
    assert "other weights" not in str(info.value)


def test_an_image_the_reference_does_not_hold_is_refused(saved, photos, tmp_path):
    from segdeploy.engine.writers import write_png
    from segdeploy.verify.compare import CompareOptions, compare
    from tests.image_zoo import photo

    other = tmp_path / "other"
    other.mkdir()
    for k, path in enumerate(sorted(photos.glob("*.png"))):
        (other / path.name).write_bytes(path.read_bytes())
    write_png(other / "p07.png", np.ascontiguousarray(photo(40, 62, seed=99)))  # same name, other pixels
    with pytest.raises(UsageError, match=r"p07\.png: not in the reference"):
        compare("unetpp_dsb2018", "random", CompareOptions(combos=[("torch", "fp32")], input_size=(32, 32),
                                                           reference=saved), images=str(other))


def test_not_a_reference_file_is_a_usage_error(tmp_path):
    from segdeploy.verify.reference import Reference

    bogus = tmp_path / "x.npz"
    np.savez(bogus, a=np.zeros(3))
    with pytest.raises(UsageError, match="not a segdeploy reference"):
        Reference.load(bogus)
    with pytest.raises(UsageError, match="no such reference file"):
        Reference.load(tmp_path / "missing.npz")
