"""segdeploy compare: measures, gates, failure naming, unavailable rows, CLI."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from segdeploy.verify.compare import (  # noqa: E402
    DEFAULT_TOLERANCES,
    Tolerance,
    _TaskAccumulator,
    compare,
    tensor_errors,
    tolerance_for,
)
from segdeploy.backends import available_backends  # noqa: E402
from segdeploy.core.registry import get_spec, list_models  # noqa: E402
from segdeploy.engine.transforms import Prediction  # noqa: E402

SIZES = {"u2net": 64, "u2netp": 64, "unet_carvana": 64, "unetpp_dsb2018": 96, "unetpp_dsb2018_nearest": 96,
         "unetpp_bigmb": 64, "unet_bigmb": 64, "wseg_voc": 64}
SLOW = {"u2net", "unet_carvana", "unetpp_bigmb", "unet_bigmb", "wseg_voc"}
HAVE_ORT = available_backends()["onnxruntime"] is None
HAVE_OV = available_backends()["openvino"] is None



def _images(n: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random colour images (blobs, not noise), different sizes per image."""
    import cv2

    rng = np.random.default_rng(seed)
    return [cv2.resize(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8), (width + 8 * k, height),
                       interpolation=cv2.INTER_CUBIC) for k in range(n)]


# ------------------------------------------------------------------------------ units


def test_tensor_errors_hand_computed():
    ref = np.array([1.0, -2.0, 4.0], np.float32)
    out = np.array([1.0, -2.5, 4.0], np.float32)
    err = tensor_errors(ref, out)
    assert err["max_abs"] == pytest.approx(0.5) and err["mean_abs"] == pytest.approx(0.5 / 3)
    assert err["rel"] == pytest.approx(0.5 / 4)
    assert err["cosine"] == pytest.approx((1 + 5 + 16) / np.sqrt(21 * (1 + 6.25 + 16)))


def _binary(mask: np.ndarray) -> Prediction:
    return Prediction(map=mask.astype(np.float32), mask=mask.astype(np.uint8))


def test_mask_iou_is_pooled_and_floored_for_tiny_masks():
    acc = _TaskAccumulator(get_spec("unetpp_dsb2018"))
    ref = np.zeros((10, 100), np.uint8)
    ref[:, :50] = 1  # 500 px
    out = ref.copy()
    out[:, 50] = 1  # +10 px
    acc.update(_binary(ref), _binary(out), None)
    tiny_ref = np.zeros((10, 100), np.uint8)
    tiny_ref[0, :2] = 1  # a 2-pixel mask; the candidate loses one pixel
    tiny_out = tiny_ref.copy()
    tiny_out[0, 1] = 0
    acc.update(_binary(tiny_ref), _binary(tiny_out), None)
    stats = acc.result("logits")
    assert stats.mask_iou_raw == pytest.approx((500 + 1) / (510 + 2))
    # The tiny mask's union (2 px) counts as 1 % of its 1000 px: 1 - 1/10 for it.
    assert stats.mask_iou == pytest.approx(1 - (10 + 1) / (510 + 10))
    assert stats.mask_iou_min == pytest.approx(0.9)
    assert stats.pixel_agreement == pytest.approx(1 - 11 / 2000)


def test_degenerate_outputs_are_counted_only_where_the_reference_varies():
    from segdeploy.verify.compare import _OutputAccumulator

    acc = _OutputAccumulator("d0")
    varying = np.linspace(0, 1, 16, dtype=np.float32).reshape(1, 1, 4, 4)
    saturated = np.full((1, 1, 4, 4), 1.0, np.float32)
    saturated[0, 0, 0, 0] = 1.0 - 1e-7  # flat up to rounding
    acc.update(np.concatenate([varying, saturated]), np.ones((2, 1, 4, 4), np.float32))
    stats = acc.result(noise=None)
    assert stats.degenerate_images == 1 and stats.reference_degenerate_images == 0


def test_tolerance_overrides():
    assert tolerance_for("binary", "bf16") == DEFAULT_TOLERANCES[("binary", "bf16")]
    assert tolerance_for("binary", "bf16", {"mask_iou": 0.5}).mask_iou == 0.5
    per = {"fp32": {"rel": 1e-6}, "bf16": {"mask_iou": 0.9}}
    assert tolerance_for("saliency", "fp32", per).rel == 1e-6
    assert tolerance_for("saliency", "bf16", per).mask_iou == 0.9
    assert tolerance_for("saliency", "int8", per) == DEFAULT_TOLERANCES[("saliency", "int8")]
    with pytest.raises(ValueError, match="unknown tolerance"):
        tolerance_for("binary", "fp32", {"iou": 1})
    assert isinstance(DEFAULT_TOLERANCES[("semantic", "fp32")], Tolerance)


def test_parse_cli_tolerances():
    from segdeploy.cli.compare import parse_tolerances

    assert parse_tolerances(["mask_iou=0.9"]) == {"mask_iou": 0.9}
    both = parse_tolerances(["mask_iou=0.9", "bf16.map_mae=0.005"])
    assert both["bf16"] == {"mask_iou": 0.9, "map_mae": 0.005} and both["fp32"] == {"mask_iou": 0.9}
    with pytest.raises(ValueError, match="unknown precision"):
        parse_tolerances(["fp64.rel=1"])
    with pytest.raises(ValueError, match="not a number"):
        parse_tolerances(["rel=small"])


# ------------------------------------------------------------------------------ the registry


@pytest.mark.skipif(not (HAVE_ORT and HAVE_OV), reason="needs onnxruntime and openvino")
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in SIZES])
def test_every_model_converts_faithfully_on_cpu_runtimes(name):
    size = SIZES[name]
    assert set(SIZES) == set(list_models())
    combos = [("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")]
    if name in ("u2netp", "unetpp_dsb2018"):  # int8 (calibrated on the compared images) on the fast ones
        combos.append(("openvino", "int8"))
    report = compare(name, "random", combos=combos, images=_images(2, size, size), input_size=(size, size))
    by = {(r.backend, r.precision): r for r in report.rows}
    noise = report.reference["noise_floor"]
    for key in combos[:2]:
        row = by[key]
        assert row.status == "pass", (key, row.failures, row.reason)
        for out in row.outputs:
            # fp32: within 1e-4 relative, or (deep random nets) within 10x PyTorch's own fp32 error.
            assert out.rel <= max(1e-4, 10 * noise[out.name]) or out.max_abs <= 1e-6, (key, out)
            assert out.nan == out.inf == out.degenerate_images == 0
    for key in combos[2:]:  # reduced precisions: reported with their task-level agreement
        row = by[key]
        if row.status == "unavailable":
            continue
        assert row.status in ("pass", "fail") and row.task is not None, row.reason
        assert row.runtime["precision"] == key[1]
        measure = row.task.pixel_agreement if report.task == "semantic" else row.task.mask_iou
        assert 0.5 < measure <= 1.0
    if by[("openvino", "bf16")].status != "unavailable":
        assert by[("openvino", "bf16")].runtime["inference_precision"] == "bf16"


# ------------------------------------------------------------------------------ failures are caught


@pytest.mark.skipif(not HAVE_ORT, reason="needs onnxruntime")
def test_wrong_resize_mode_fails_naming_output_and_measure(tmp_path):
    import onnx

    from segdeploy.convert.export import cached_export

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
    report = compare("u2netp", "random", backends=["onnxruntime"], precisions=["fp32"], onnx_path=bad,
                     images=_images(2, 64, 64), input_size=(64, 64))
    row = report.rows[0]
    assert row.status == "fail" and not report.passed
    assert any(f.startswith("d0: relative error") for f in row.failures), row.failures
    assert max(o.rel for o in row.outputs) > 1e-2


def test_fp16_overflow_is_reported_as_nan_or_inf():
    """An input beyond fp16's range (65504) overflows in fp16: compare must fail the row, naming it."""
    spec = get_spec("unetpp_dsb2018")
    crafted = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32) * 1e6
    report = compare(spec, "random", backends=["torch"], precisions=["fp32", "fp16"], arrays=crafted,
                     input_size=(32, 32), noise_floor=False)
    fp32, fp16 = report.rows
    assert fp32.status == "pass"
    if fp16.status == "unavailable":
        pytest.skip(fp16.reason)
    assert fp16.status == "fail" and not report.passed
    assert any(f.startswith("logits:") and "NaN" in f and "Inf" in f for f in fp16.failures), fp16.failures
    assert fp16.outputs[0].inf + fp16.outputs[0].nan > 0


# ------------------------------------------------------------------------------ unavailable rows


def test_unavailable_rows_do_not_fail_unless_required():
    images = _images(2, 32, 32)
    report = compare("unetpp_dsb2018", "random", backends=["torch"], precisions=["fp32", "int8"], images=images,
                     input_size=(32, 32), noise_floor=False)
    assert [r.status for r in report.rows] == ["pass", "unavailable"]
    assert "int8" in report.rows[1].reason and report.passed
    strict = compare("unetpp_dsb2018", "random", backends=["torch"], precisions=["int8"], images=images,
                     input_size=(32, 32), require_all=True, noise_floor=False)
    assert not strict.passed


def test_report_json_round_trip(tmp_path):
    from segdeploy.verify.compare import write_report

    report = compare("unetpp_dsb2018", "random", backends=["torch"], precisions=["fp32", "bf16"],
                     images=_images(3, 32, 32), input_size=(32, 32), batch_size=2)
    path = write_report(report, tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["model"] == "unetpp_dsb2018" and data["images"] == 3 and data["passed"] == report.passed
    assert [tuple(s) for s in data["input_shapes"]] == [(2, 3, 32, 32), (1, 3, 32, 32)]
    assert data["rows"][0]["outputs"][0]["name"] == "logits"
    assert data["environment"]["packages"]["torch"]
    assert data["reference"]["noise_floor"]["logits"] < 1e-4


def test_ground_truth_metric_change_is_reported():
    spec = get_spec("unetpp_dsb2018")
    images = _images(2, 32, 32)
    samples = [SimpleNamespace(id=str(i), image=im, mask=(im[..., 0] > 128).astype(np.uint8))
               for i, im in enumerate(images)]
    report = compare(spec, "random", backends=["torch"], precisions=["fp32"], samples=samples, input_size=(32, 32))
    task = report.rows[0].task
    assert task.gt_metric.startswith("IoU") and task.gt_reference == pytest.approx(task.gt_candidate)


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
                 "--quiet"])
    assert code == 0
    data = json.loads(out.read_text())
    assert [r["status"] for r in data["rows"]] == ["pass", "unavailable"]
    assert "unavailable" in capsys.readouterr().out


def test_cli_compare_exits_nonzero_on_failure_and_when_nothing_runs(tmp_path, capsys):
    from segdeploy.cli.main import main

    _write_images(tmp_path / "imgs", _images(2, 32, 32))
    common = ["compare", "unetpp_dsb2018", "--weights", "random", "--images", str(tmp_path / "imgs"),
              "--input-size", "32", "--quiet"]
    # bf16 can't meet an fp32-grade mask tolerance of "identical"
    code = main(common + ["--backends", "torch", "--precisions", "bf16", "--tolerance", "bf16.mask_iou=1.01"])
    assert code == 1
    assert "mask IoU" in capsys.readouterr().out
    if not HAVE_ORT:
        return
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        code = main(common + ["--backends", "onnxruntime", "--device", "cuda"])
        captured = capsys.readouterr()
        assert code == 2
        assert "no CUDAExecutionProvider" in captured.out and "nothing was compared" in captured.err


def test_cli_compare_dataset_pairs(tmp_path, capsys):
    from segdeploy.cli.main import main
    from segdeploy.engine.writers import write_png

    images = _images(2, 32, 32)
    _write_images(tmp_path / "images", images)
    (tmp_path / "masks").mkdir()
    for i, im in enumerate(images):
        write_png(tmp_path / "masks" / f"img{i}.png", ((im[..., 0] > 128) * 255).astype(np.uint8))
    out = tmp_path / "r.json"
    code = main(["compare", "u2netp", "--weights", "random", "--images", str(tmp_path / "images"), "--masks",
                 str(tmp_path / "masks"), "--input-size", "32", "--backends", "torch", "--precisions", "bf16",
                 "--json", str(out), "--quiet"])
    data = json.loads(out.read_text())
    assert code in (0, 1)
    task = data["rows"][0]["task"]
    assert task["gt_metric"] == "MAE vs ground truth" and task["images"] == 2
    assert abs(task["gt_reference"] - task["gt_candidate"]) <= task["map_mae"] + 1e-9  # the documented bound
