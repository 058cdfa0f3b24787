"""segdeploy compare: rows, exit codes, failure naming, unavailable rows, int8 calibration split, CLI."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from segdeploy.backends import available_backends  # noqa: E402
from segdeploy.core.errors import UsageError  # noqa: E402
from segdeploy.core.registry import get_spec, list_models  # noqa: E402
from segdeploy.verify.compare import CompareOptions, compare  # noqa: E402

from tests.registry_params import model_params, small_size  # noqa: E402

HAVE_ORT = available_backends()["onnxruntime"] is None
HAVE_OV = available_backends()["openvino"] is None


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: a second intra-op thread only spins
    yield
    torch.set_num_threads(before)


def _images(n: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random colour images (blobs, not noise), different sizes per image."""
    import cv2

    rng = np.random.default_rng(seed)
    return [cv2.resize(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8), (width + 4 * k, height),
                       interpolation=cv2.INTER_CUBIC) for k in range(n)]


def test_parse_cli_tolerances():
    from segdeploy.cli.compare import parse_tolerances

    assert parse_tolerances(["mask_iou=0.9"]) == {"mask_iou": 0.9}
    both = parse_tolerances(["mask_iou=0.9", "bf16.map_mae.worst=0.005"])
    assert both["bf16"] == {"mask_iou": 0.9, "map_mae.worst": 0.005} and both["fp32"] == {"mask_iou": 0.9}
    assert parse_tolerances(["map_mae.worst=0.1"]) == {"map_mae.worst": 0.1}
    with pytest.raises(UsageError, match="unknown precision"):
        parse_tolerances(["fp64.rtol=1"])
    with pytest.raises(UsageError, match="not a number"):
        parse_tolerances(["rtol=small"])


# ------------------------------------------------------------------------------ the registry
@pytest.mark.skipif(not (HAVE_ORT and HAVE_OV), reason="needs onnxruntime and openvino")
@pytest.mark.parametrize("name", model_params(variants_slow=True))
def test_every_model_converts_faithfully_on_cpu_runtimes(name):
    size = small_size(name)
    combos = [("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")]
    # Trained weights where they ship (u2netp): random U²-Net weights saturate the maps, and the
    # per-image min-max normalisation then blows float32 rounding up past the fp32 thresholds,
    # which are judged on trained weights (docs/verification.md).
    weights = None if get_spec(name).default_weights else "random"
    report = compare(name, weights, CompareOptions(combos=combos, input_size=(size, size), allow_few_images=True),
                     images=_images(4, size, size))
    by = {(r.backend, r.precision): r for r in report.rows}
    for key in combos[:2]:
        row = by[key]
        assert row.status == "pass", (key, row.failures, row.reason)
        for output, stats in row.summary["tensors"].items():
            assert stats["nan"] == stats["inf"] == 0 and stats["constant_images"] == []
            assert stats["ratio_q_worst"] <= 1.0
    bf16 = by[("openvino", "bf16")]
    if bf16.status != "unavailable":  # reported with its measures; random weights say nothing about bf16
        assert bf16.runtime["inference_precision"] == "bf16" and bf16.judged == 4
        assert set(bf16.summary["measures"]) == {m.name for m in _task(name).fidelity_measures}


def _task(name):
    from segdeploy.tasks import get_task

    return get_task(get_spec(name))


# ------------------------------------------------------------------------------ failures are caught
@pytest.mark.skipif(not HAVE_ORT, reason="needs onnxruntime")
def test_wrong_resize_mode_in_the_graph_fails_naming_image_and_output(tmp_path):
    import onnx

    from segdeploy.convert.export_cache import cached_export

    good = cached_export("u2netp", "random", input_size=(64, 64))
    model = onnx.load(str(good))
    changed = 0
    for node in model.graph.node:
        if node.op_type == "Resize":
            for attr in node.attribute:
                if attr.name == "mode" and attr.s == b"linear":
                    attr.s, changed = b"nearest", changed + 1
    assert changed
    bad = tmp_path / "nearest.onnx"
    onnx.save(model, str(bad))
    options = CompareOptions(combos=[("onnxruntime", "fp32")], onnx_path=bad, input_size=(64, 64),
                             allow_few_images=True)
    report = compare("u2netp", "random", options, images=_images(4, 64, 64))
    (row,) = report.rows
    assert row.status == "fail" and report.exit_code() == 3
    assert any(f.startswith("image ") and "d0 tensor error" in f for f in row.failures), row.failures


def test_a_runtime_that_raises_is_an_error_row_exit_4():
    from segdeploy.backends import open_runtime
    from segdeploy.convert.export import spec_with_input_size
    from segdeploy.zoo import create_model

    spec = spec_with_input_size(get_spec("unetpp_dsb2018"), (32, 32))
    module = create_model(spec, "random")
    inner = open_runtime(module, backend="torch", spec=spec)

    class Broken:
        name, precision, spec = "broken", "fp32", inner.spec

        def run(self, batch):
            raise RuntimeError("device lost")

        def describe(self):
            return {}

    report = compare(module, options=CompareOptions(combos=[], input_size=(32, 32), allow_few_images=True),
                     runtimes=[Broken()], images=_images(2, 32, 32))
    (row,) = report.rows
    assert row.status == "error" and "infer failed on array0: RuntimeError: device lost" in row.reason
    assert report.exit_code() == 4


def test_unavailable_rows_do_not_fail_unless_required():
    images = _images(2, 32, 32)
    kwargs = dict(backends=["torch"], input_size=(32, 32), allow_few_images=True)
    report = compare("unetpp_dsb2018", "random", CompareOptions(precisions=["fp32", "int8"], **kwargs), images=images)
    assert [r.status for r in report.rows] == ["pass", "unavailable"]
    assert "int8" in report.rows[1].reason and report.passed and report.exit_code() == 0
    strict = compare("unetpp_dsb2018", "random", CompareOptions(precisions=["int8"], require_all=True, **kwargs),
                     images=images)
    assert not strict.passed and strict.exit_code() == 3


def test_nothing_compared_exits_2():
    options = CompareOptions(backends=["torch"], precisions=["int8"], input_size=(32, 32), allow_few_images=True)
    report = compare("unetpp_dsb2018", "random", options, images=_images(2, 32, 32))
    assert report.rows[0].status == "unavailable" and report.exit_code() == 2


@pytest.mark.skipif(not HAVE_ORT, reason="needs onnxruntime")
def test_int8_without_calibration_images_is_judged_on_other_images():
    with pytest.raises(UsageError, match="calibrated on 4 of the 16 images and judged on the other 12"):
        compare("unetpp_dsb2018", "random", CompareOptions(combos=[("onnxruntime", "int8")], input_size=(32, 32)),
                images=_images(16, 32, 32))


def test_report_json_round_trip(tmp_path):
    from segdeploy.verify.compare import write_report

    options = CompareOptions(backends=["torch"], precisions=["fp32"], input_size=(32, 32), batch_size=2,
                             allow_few_images=True)
    report = compare("unetpp_dsb2018", "random", options, images=_images(3, 32, 32))
    path = write_report(report, tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["model"] == "unetpp_dsb2018" and data["images"] == 3 and data["passed"] is True
    assert data["exit_code"] == 0 and data["few_images"] is True and data["checked_outputs"] == ["logits"]
    row = data["rows"][0]
    assert [im["id"] for im in row["images"]] == ["array0", "array1", "array2"]
    assert row["gate"]["tensor"]["rtol"] == 1e-3 and row["gate"]["reason"].startswith("fp32 computes")
    assert data["environment"]["packages"]["torch"]
    assert len(data["weights"]["state_dict_sha256"]) == 64


def test_ground_truth_score_is_reported_per_row():
    spec = get_spec("unetpp_dsb2018")
    images = _images(2, 32, 32)
    samples = [SimpleNamespace(id=str(i), image=im, mask=(im[..., 0] > 128).astype(np.uint8))
               for i, im in enumerate(images)]
    options = CompareOptions(backends=["torch"], precisions=["fp32"], input_size=(32, 32), allow_few_images=True)
    report = compare(spec, "random", options, samples=samples)
    gt = report.rows[0].summary["ground_truth"]
    assert gt["measure"] == "gt_iou" and gt["images"] == 2 and gt["reference"] == pytest.approx(gt["candidate"])


# ------------------------------------------------------------------------------ CLI
def _write_images(folder, images) -> None:
    from segdeploy.engine.writers import write_png

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        write_png(folder / f"img{i}.png", image)


def test_cli_compare_writes_json_and_exits_zero(tmp_path, capsys):
    from segdeploy.cli.main import main

    _write_images(tmp_path / "imgs", _images(2, 32, 40))
    out = tmp_path / "cmp.json"
    code = main(["compare", "unetpp_dsb2018", "--weights", "random", "--images", str(tmp_path / "imgs"),
                 "--input-size", "32", "--backends", "torch", "--precisions", "fp32,int8", "--json", str(out),
                 "--quiet", "--allow-few-images"])
    assert code == 0
    data = json.loads(out.read_text())
    assert [r["status"] for r in data["rows"]] == ["pass", "unavailable"]
    assert "FEW IMAGES" in capsys.readouterr().out


def test_cli_compare_exits_3_naming_image_and_measure_and_2_when_nothing_runs(tmp_path, capsys):
    from segdeploy.cli.main import main

    _write_images(tmp_path / "imgs", _images(2, 32, 32))
    common = ["compare", "unetpp_dsb2018", "--weights", "random", "--images", str(tmp_path / "imgs"),
              "--input-size", "32", "--quiet", "--allow-few-images"]
    # an impossible bound: IoU above 1 on every image
    out = tmp_path / "r.json"
    code = main(common + ["--backends", "torch", "--precisions", "fp32", "--tolerance", "fp32.mask_iou.worst=1.01",
                          "--json", str(out)])
    assert code == 3
    assert "GATE FAILED" in capsys.readouterr().out
    (failure,) = json.loads(out.read_text())["rows"][0]["failures"]
    assert failure == f"image {tmp_path / 'imgs' / 'img0.png'}: mask_iou 1 < 1.01 (worst image)"
    code = main(common + ["--backends", "torch", "--precisions", "int8"])
    assert code == 2 and "nothing was compared" in capsys.readouterr().err


def test_cli_compare_needs_16_images_by_default(tmp_path, capsys):
    from segdeploy.cli.main import main

    _write_images(tmp_path / "imgs", _images(2, 32, 32))
    code = main(["compare", "unetpp_dsb2018", "--weights", "random", "--images", str(tmp_path / "imgs"),
                 "--input-size", "32", "--quiet", "--backends", "torch"])
    assert code == 2
    assert "at least 16 images; 2 given" in capsys.readouterr().err


def test_cli_compare_dataset_pairs(tmp_path):
    from segdeploy.cli.main import main
    from segdeploy.engine.writers import write_png

    images = _images(2, 32, 32)
    _write_images(tmp_path / "images", images)
    (tmp_path / "masks").mkdir()
    for i, im in enumerate(images):
        write_png(tmp_path / "masks" / f"img{i}.png", ((im[..., 0] > 128) * 255).astype(np.uint8))
    out = tmp_path / "r.json"
    code = main(["compare", "u2netp", "--weights", "random", "--images", str(tmp_path / "images"), "--masks",
                 str(tmp_path / "masks"), "--input-size", "32", "--backends", "torch", "--precisions", "fp32",
                 "--json", str(out), "--quiet", "--allow-few-images"])
    data = json.loads(out.read_text())
    assert code == 0 and data["rows"][0]["status"] == "pass"
    row = data["rows"][0]
    gt = row["summary"]["ground_truth"]
    assert gt["measure"] == "gt_mae" and gt["images"] == 2
    # |MAE(candidate) - MAE(reference)| <= mean |candidate map - reference map| (the documented bound)
    assert abs(gt["reference"] - gt["candidate"]) <= row["summary"]["measures"]["map_mae"]["mean"] + 1e-9


def test_cli_help_lists_exit_codes(capsys):
    from segdeploy.cli.main import main

    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    out = capsys.readouterr().out
    assert "exit codes:" in out and "a fidelity gate failed" in out and "--save-reference" in out


def test_named_in_memory_images_keep_their_names_in_the_report():
    """(name, array) pairs: a failing photo is named by its name, not by its position."""
    named = [(f"photo{k}", image) for k, image in enumerate(_images(2, 32, 32))]
    options = CompareOptions(backends=["torch"], precisions=["fp32"], input_size=(32, 32), allow_few_images=True)
    report = compare("unetpp_dsb2018", "random", options, images=named)
    assert [im["id"] for im in report.to_dict()["rows"][0]["images"]] == ["photo0", "photo1"]
