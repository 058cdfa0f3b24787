"""segdeploy run: end to end on generated dataset trees, resumption, skips with reasons, the report files.

Runs are kept small for 2 CPU cores: UNet++ DSB2018 at its own 96x96 (2 validation images of a
10-image tree), U²-Net recipe with ``--model u2netp --model-input-size 64`` (4 images), batch
sizes 1 and 2, one warm-up and two timed calls.
"""

import base64
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from segdeploy.cli.main import main
from segdeploy.recipes.catalog import RECIPES
from segdeploy.report.render import SECTIONS, STEP_NAMES, check_results, results_schema, validate_results
from tests.helpers_datasets import make_dsb2018_tree, make_ecssd_tree

SMALL = ["--device", "cpu", "--batch-sizes", "1,2", "--bench-warmup", "1", "--bench-iters", "2", "--quiet"]


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def _assert_valid(results: dict) -> None:
    import jsonschema

    assert validate_results(results) == []
    jsonschema.validate(results, results_schema())  # the schema file shipped in the package
    assert list(results)[:2] == ["schema", "verdict"]  # the verdict comes first


def _unit_files(run_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in sorted((run_dir / "steps").rglob("*.json"))}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Keep any cached export out of the user's home."""
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("cache")
    mp.setenv("SEGDEPLOY_CACHE", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="module")
def dsb_run(tmp_path_factory, cache):
    root = make_dsb2018_tree(tmp_path_factory.mktemp("dsb"), 10)
    run_dir = tmp_path_factory.mktemp("run") / "dsb"
    args = ["run", "unetpp-dsb2018", "--data-root", str(root), "--weights", "random", "-o", str(run_dir),
            "--compare-images", "2", "--allow-few-images", *SMALL]
    code = main(args)
    return run_dir, args, code


@pytest.mark.slow
def test_dsb2018_run_is_complete_and_valid(dsb_run):
    run_dir, _, code = dsb_run
    assert code == 0
    results = _results(run_dir)
    _assert_valid(results)
    steps = results["steps"]
    assert [name for name in STEP_NAMES if steps[name]["status"] == "done"] == list(STEP_NAMES)
    assert Path(steps["export"]["result"]["onnx"]).is_file()
    assert results["weights"] == {**results["weights"], "kind": "random", "seed": 0, "sha256": None}
    labels = [u["label"] for u in steps["bench"]["result"]["configs"] if u["status"] == "done"]
    assert labels == ["torch fp32", "onnxruntime fp32", "openvino fp32"]
    for unit in steps["bench"]["result"]["configs"]:
        assert [r["batch_size"] for r in unit["report"]["results"]] == [1, 2]
    compare = steps["compare"]["result"]["configs"]
    assert [(u["label"], u["passed"]) for u in compare] == [("onnxruntime fp32", True), ("openvino fp32", True)]
    assert all(u["summary"]["rel"] < 1e-3 and u["summary"]["images"] == 2 for u in compare)
    assert all(u["summary"]["few_images"] is True for u in compare)
    (evaluated,) = steps["eval"]["result"]["configs"]
    record = evaluated["record"]
    assert evaluated["label"] == "torch fp32" and record["images_scored"] == 2
    assert 0.0 <= record["metrics"]["iou"] <= 1.0
    # The published-vs-measured IoU row carries the evaluation's number, flagged not comparable.
    (iou_row,) = [
        r for r in results["published_vs_measured"] if r["metric"] == "iou" and r["source"] == "seed guide 002"
    ]
    assert iou_row["measured"] == record["metrics"]["iou"] and iou_row["comparable"] is False
    assert "random weights" in iou_row["reason"]
    assert any("Random weights" in w for w in results["warnings"])


@pytest.mark.slow
def test_dsb2018_reports_have_every_section_and_embedded_plots(dsb_run):
    run_dir, _, _ = dsb_run
    markdown = (run_dir / "report.md").read_text()
    page = (run_dir / "report.html").read_text()
    for anchor, title in SECTIONS:
        assert (f"# {title}: " if anchor == "verdict" else f"\n## {title}\n") in markdown
        assert f'<section id="{anchor}">' in page
    assert "(plots/throughput.png)" in markdown and (run_dir / "plots" / "throughput.png").is_file()
    assert markdown.startswith("# Verdict: ")
    # Self-contained: no external resource, every image a decodable base64 PNG. On a CPU no
    # published row (Ascend, T4) is comparable, so there is one plot and the rows are folded.
    assert not re.search(r'(src|href)="(?!data:)', page)
    payloads = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(payloads) == 1 and 'id="plot-throughput"' in page
    for payload in payloads:
        with Image.open(io.BytesIO(base64.b64decode(payload))) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 200
    assert "row(s) not comparable: measured on Ascend 310P3 (an accelerator card), this run on the CPU" in page
    # Numbers of results.json appear in the renderings.
    results = _results(run_dir)
    best = max(r["images_per_s"] for u in results["steps"]["bench"]["result"]["configs"]
               for r in u["report"]["results"])
    assert f"{best:.2f}" in markdown and f"{best:.2f}" in page


@pytest.mark.slow
def test_rerun_resumes_without_recomputing(dsb_run):
    run_dir, args, _ = dsb_run
    before_files = _unit_files(run_dir)
    before = _results(run_dir)
    assert main(args) == 0
    after = _results(run_dir)
    _assert_valid(after)
    for name in STEP_NAMES[:-1]:
        assert after["steps"][name]["resumed"] is True, name
    assert _unit_files(run_dir) == before_files  # no stored unit was rewritten
    for name in ("compare", "eval", "bench"):
        old = [{k: v for k, v in u.items() if k != "resumed"} for u in before["steps"][name]["result"]["configs"]]
        new = [{k: v for k, v in u.items() if k != "resumed"} for u in after["steps"][name]["result"]["configs"]]
        assert old == new
    assert after["created_utc"] == before["created_utc"]


@pytest.mark.slow
def test_a_changed_setting_recomputes_only_what_depends_on_it(dsb_run, tmp_path):
    run_dir, args, _ = dsb_run
    changed = [a if a != "1,2" else "2" for a in args]  # batch sizes 1,2 -> 2
    before = _unit_files(run_dir)
    assert main(changed) == 0
    results = _results(run_dir)
    assert results["steps"]["bench"]["resumed"] is False
    for name in ("export", "compare", "eval"):
        assert results["steps"][name]["resumed"] is True
    after = _unit_files(run_dir)
    rewritten = {k for k in after if after[k] != before.get(k)}
    assert rewritten == {k for k in after if k.startswith("steps/bench/")}
    assert all([r["batch_size"] for r in u["report"]["results"]] == [2]
               for u in results["steps"]["bench"]["result"]["configs"])


def test_steps_without_input_are_skipped_with_reasons(tmp_path, cache):
    run_dir = tmp_path / "run"
    code = main(["run", "unetpp-dsb2018", "--weights", "random", "--backends", "torch", "--skip", "bench",
                 "-o", str(run_dir), *SMALL])
    assert code == 0
    results = _results(run_dir)
    _assert_valid(results)
    steps = results["steps"]
    assert steps["export"]["status"] == "skipped" and "no ONNX backend" in steps["export"]["reason"]
    assert steps["compare"]["status"] == "skipped" and "reference" in steps["compare"]["reason"]
    assert steps["eval"]["status"] == "skipped" and "--data-root" in steps["eval"]["reason"]
    assert steps["bench"]["status"] == "skipped" and "--skip bench" in steps["bench"]["reason"]
    assert steps["runtimes"]["status"] == "done"
    markdown = (run_dir / "report.md").read_text()
    assert "no dataset given: pass --data-root DIR" in markdown
    page = (run_dir / "report.html").read_text()
    assert "no dataset given: pass --data-root DIR" in page
    for anchor, _ in SECTIONS:
        assert f'<section id="{anchor}">' in page
    # Again: the torch fp32 runtime unit is stored; with --force it is recomputed.
    args = ["run", "unetpp-dsb2018", "--weights", "random", "--backends", "torch", "--skip", "bench",
            "-o", str(run_dir), *SMALL]
    assert main(args) == 0 and _results(run_dir)["steps"]["runtimes"]["resumed"] is True
    assert main([*args, "--force"]) == 0 and _results(run_dir)["steps"]["runtimes"]["resumed"] is False


def test_an_uninstalled_backend_is_skipped_not_failed(tmp_path, cache, monkeypatch):
    from segdeploy.recipes.runner import run_recipe
    from segdeploy.backends import get_runtime_class

    openvino = get_runtime_class("openvino")
    monkeypatch.setattr(openvino, "is_available", classmethod(lambda cls: False))
    monkeypatch.setattr(openvino, "unavailable_reason", classmethod(lambda cls: "OpenVINO is not installed (test)"))
    results = run_recipe("unetpp-dsb2018", tmp_path / "run", weights="random", device="cpu",
                         backends=["torch", "openvino"], precisions=["fp32", "int8"], skip=("eval", "bench"))
    _assert_valid(results)
    units = {u["label"]: u for u in results["steps"]["runtimes"]["result"]["configs"]}
    assert units["openvino fp32"]["status"] == units["openvino int8"]["status"] == "skipped"
    assert units["openvino fp32"]["reason"] == "OpenVINO is not installed (test)"
    assert units["torch int8"]["status"] == "skipped" and "does not offer int8" in units["torch int8"]["reason"]
    assert units["torch fp32"]["status"] == "done"
    # Nothing is exported for a backend that cannot run; compare has nothing besides the reference.
    export = results["steps"]["export"]
    assert export["status"] == "skipped" and "OpenVINO is not installed (test)" in export["reason"]
    assert results["steps"]["compare"]["status"] == "skipped"
    assert not any("failed" in w for w in results["warnings"])


@pytest.mark.slow
def test_u2net_recipe_with_small_model_and_input(tmp_path, cache):
    root = make_ecssd_tree(tmp_path / "ecssd", 4)
    run_dir = tmp_path / "run"
    code = main(
        [
            "run",
            "u2net-ecssd",
            "--data-root",
            str(root),
            "--weights",
            "random",
            "--model",
            "u2netp",
            "--model-input-size",
            "64",
            "--limit",
            "4",
            "--compare-images",
            "2",
            "--allow-few-images",
            "--backends",
            "torch,onnxruntime",
            "-o",
            str(run_dir),
            *SMALL,
        ]
    )
    assert code == 0
    results = _results(run_dir)
    _assert_valid(results)
    assert results["options"]["model"] == "u2netp" and results["model"]["input_size"] == [64, 64]
    record = results["steps"]["eval"]["result"]["configs"][0]["record"]
    assert record["images_scored"] == 4 and {"maxF", "MAE"} <= set(record["metrics"])
    assert results["steps"]["bench"]["result"]["settings"]["input_size"] == [64, 64]
    warnings = " ".join(results["warnings"])
    assert "overridden to 64x64" in warnings and "u2netp instead of the recipe's u2net" in warnings
    # Every published row is U²-Net's: shown, never compared.
    rows = results["published_vs_measured"]
    assert len(rows) == len(RECIPES["u2net-ecssd"].published)
    assert all(r["ratio"] is None for r in rows)
    assert any(r["measured"] is not None and r["kind"] == "throughput" for r in rows)
    assert all(not r["comparable"] for r in rows)


# ----------------------------------------------------------------------------------- gate and caches
def test_too_few_compare_images_is_a_usage_error(tmp_path, cache):
    code = main(["run", "unetpp-dsb2018", "--weights", "random", "--compare-images", "4", "-o",
                 str(tmp_path / "run"), *SMALL])
    assert code == 2 and not (tmp_path / "run" / "results.json").exists()


@pytest.mark.slow
def test_a_run_whose_int8_fails_the_gate_exits_3_naming_image_and_measure(tmp_path, cache, capsys):
    """int8 calibrated on black images only: real photos saturate its activations and its masks
    drift. The compare unit is *failed* (not done with passed=False) and the run exits 3."""
    calib = tmp_path / "black"
    calib.mkdir()
    for k in range(4):
        Image.new("RGB", (96, 96)).save(calib / f"b{k}.png")
    run_dir = tmp_path / "run"
    code = main(["run", "unetpp-dsb2018", "--weights", "random", "--backends", "onnxruntime", "--precisions",
                 "fp32,int8", "--calib", str(calib), "--skip", "eval,bench", "-o", str(run_dir), *SMALL])
    assert code == 3
    results = _results(run_dir)
    fp32, unit = results["steps"]["compare"]["result"]["configs"]
    assert fp32["label"] == "onnxruntime fp32" and fp32["status"] == "done" and fp32["passed"] is True
    assert unit["status"] == "failed" and unit["passed"] is False and unit["error"] == "gate"
    assert unit["summary"]["images"] == 16
    reason = unit["reason"]
    assert reason.startswith("fidelity gate failed against torch fp32: ")
    assert re.search(r"(image synthetic|image array)\S*: (logits|mask_iou)|mask_iou 5th percentile", reason), reason
    assert not (run_dir / "steps" / "compare" / "onnxruntime-int8.json").exists()  # never resumed as done


@pytest.mark.slow
def test_an_onnx_artifact_corrupted_in_place_is_exported_again(tmp_path, cache):
    run_dir = tmp_path / "run"
    args = ["run", "unetpp-dsb2018", "--weights", "random", "--backends", "onnxruntime", "--precisions", "fp32",
            "--skip", "compare,eval,bench", "-o", str(run_dir), *SMALL]
    assert main(args) == 0
    export = _results(run_dir)["steps"]["export"]["result"]
    onnx_path = Path(export["onnx"])
    data = bytearray(onnx_path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)  # same size, other bytes
    onnx_path.write_bytes(bytes(data))
    assert main(args) == 0
    again = _results(run_dir)["steps"]["export"]
    assert again["resumed"] is False
    from segdeploy.zoo.checkpoints import file_sha256

    assert file_sha256(onnx_path) == again["result"]["onnx_sha256"] == export["onnx_sha256"]
    assert main(args) == 0 and _results(run_dir)["steps"]["export"]["resumed"] is True  # intact: reused


def test_unit_fingerprints_include_library_versions(tmp_path, monkeypatch):
    import segdeploy.convert.fingerprints as fingerprints
    from segdeploy.recipes.options import RunRequest, resolve_options
    from segdeploy.recipes.runner import Runner

    runner = Runner(resolve_options("unetpp-dsb2018", asked=RunRequest(weights="random", device="cpu")), tmp_path)
    before = runner._fp({"step": "x"})
    real = fingerprints.library_versions()
    monkeypatch.setattr(fingerprints, "library_versions", lambda: {**real, "onnxruntime": "0.0-upgraded"})
    assert runner._fp({"step": "x"}) != before


# ----------------------------------------------------------------------------------- schema checks
def _minimal() -> dict:
    step = {"status": "done", "reason": None, "result": {"configs": []}, "wall_s": 0.1, "resumed": False}
    return {
        "schema": "segdeploy.run/1",
        "verdict": {"passed": 1, "failed": 0, "not_run": 0, "headline": "1 pass / 0 fail", "lines": [],
                    "choice": None},
        "created_utc": "t", "updated_utc": "t",
        "recipe": {"name": "r", "title": "t", "guide": "g", "model": "m", "headline": "iou",
                   "published": [{"kind": "throughput", "metric": "images_per_s", "value": 10.0, "source": "s",
                                  "hardware": "h", "batch_size": 4, "precision": None}]},
        "options": {"recipe": "r", "model": "m", "weights": "random", "device": "cpu", "backends": ["torch"],
                    "precisions": ["fp32"], "batch_sizes": [1, 4], "dataset": None, "input_size": [8, 8]},
        "model": {"name": "m", "task": "binary"},
        "weights": {"kind": "random", "seed": 0, "sha256": None, "path": None},
        "environment": {"python": "3", "packages": {}, "cpu": "x", "cpu_count": 2},
        "steps": {name: json.loads(json.dumps(step)) for name in STEP_NAMES},
        "published_vs_measured": [{"kind": "throughput", "metric": "images_per_s", "source": "s", "hardware": "h",
                                   "published": 10.0, "measured": None, "comparable": False,
                                   "reason": "not measured"}],
        "warnings": [],
    }


def test_the_schema_ships_in_the_package_and_accepts_a_minimal_document():
    from importlib import resources

    assert resources.files("segdeploy.report").joinpath("results.schema.json").is_file()
    assert validate_results(_minimal()) == []
    check_results(_minimal())


_BENCH_UNIT = {"label": "torch fp32", "backend": "torch", "precision": "fp32", "status": "done", "reason": None,
               "report": {"results": []}}


@pytest.mark.parametrize("breaks, expected", [
    (lambda d: d["steps"].pop("bench"), "$.steps: 'bench' is a required property"),
    (lambda d: d.pop("verdict"), "$: 'verdict' is a required property"),
    (lambda d: d["steps"]["eval"].update(status="skipped", reason=None), "$.steps.eval.reason: None is not of type"),
    (lambda d: d["steps"]["eval"].update(status="finished"), "'finished' is not one of"),
    (lambda d: d["weights"].update(kind="file", path="/w.pth"), "$.weights.sha256: None is not of type 'string'"),
    (lambda d: d["weights"].update(kind="file", sha256="abc"), "does not match"),
    (lambda d: d["options"].update(batch_sizes=[0]), "$.options.batch_sizes[0]: 0 is less than the minimum of 1"),
    (lambda d: d["published_vs_measured"].clear(), "0 rows for 1 published"),
    (lambda d: d.update(schema="segdeploy.run/0"), "$.schema: 'segdeploy.run/1' was expected"),
    (lambda d: d["published_vs_measured"][0].update(reason=""), "should be non-empty"),
    (lambda d: d["steps"]["bench"]["result"]["configs"].append(dict(_BENCH_UNIT)),
     "'conditions' is a required property"),  # a timing without its machine conditions
    (lambda d: d["steps"]["bench"]["result"]["configs"].append(
        {"label": "x", "backend": "x", "precision": "fp32", "status": "failed", "reason": ""}),
     "$.steps.bench.result.configs[0].reason: '' should be non-empty"),
])
def test_validate_results_names_each_problem(breaks, expected):
    document = _minimal()
    breaks(document)
    errors = validate_results(document)
    assert any(expected in e for e in errors), errors
    with pytest.raises(ValueError, match="does not match the segdeploy.run/1 schema"):
        check_results(document)


def _bench_unit(backend, precision, ips, batch=4, calls=5):
    latency = {"median_ms": 1.0, "min_ms": 0.9, "max_ms": 1.3, "p90_ms": 1.2, "count": calls}
    return {"label": f"{backend} {precision}", "backend": backend, "precision": precision, "status": "done",
            "reason": None, "conditions": None,
            "report": {"results": [{"batch_size": batch, "images_per_s": ips, "latency": latency,
                                    "ms_per_image": 1.0 / batch}]}}


def _runtime_unit(backend, precision, status="done", reason=None):
    return {"label": f"{backend} {precision}", "backend": backend, "precision": precision, "status": status,
            "reason": reason}


def _compare_unit(backend, precision, passed, failures=()):
    return {"label": f"{backend} {precision}", "backend": backend, "precision": precision, "status": "done",
            "reason": None, "passed": passed, "summary": {"mask_iou": 0.5 if failures else 0.999, "images": 2},
            "record": {"status": "pass" if passed else "fail", "failures": list(failures)}}


def _matrix_document() -> dict:
    """torch fp32 (reference), openvino fp32 (pass), openvino int8 (fails, fastest), torch int8 (not offered)."""
    document = _minimal()
    document["options"].update(backends=["torch", "openvino"], precisions=["fp32", "int8"], device="cpu")
    steps = document["steps"]
    steps["runtimes"]["result"]["configs"] = [
        _runtime_unit("torch", "fp32"), _runtime_unit("torch", "int8", "skipped", "torch does not offer int8"),
        _runtime_unit("openvino", "fp32"), _runtime_unit("openvino", "int8")]
    steps["compare"]["result"]["configs"] = [
        _compare_unit("openvino", "fp32", True),
        _compare_unit("openvino", "int8", False, ["d0: mask IoU 0.5000 < 0.9 (worst image 0002)"])]
    steps["bench"]["result"]["configs"] = [_bench_unit("torch", "fp32", 5.0), _bench_unit("openvino", "fp32", 20.0),
                                           _bench_unit("openvino", "int8", 40.0, calls=12)]
    return document


def test_the_verdict_counts_each_configuration_and_picks_the_fastest_passing():
    from segdeploy.report.document import read_document

    report = read_document(_matrix_document())
    gates = {c.label: c.gate for c in report.configs}
    assert gates == {"torch fp32": "reference", "torch int8": "not run", "openvino fp32": "pass",
                     "openvino int8": "fail"}
    verdict = report.verdict
    assert (verdict.passed, verdict.failed, verdict.not_run) == (2, 1, 1)
    assert verdict.headline.startswith("2 pass / 1 FAIL / 1 not run here of 4 configurations")
    # openvino int8 is twice as fast but fails: auto must not pick it.
    assert verdict.choice.label == "openvino fp32" and verdict.choice.images_per_s == 20.0
    assert "faster but failing the gate: openvino int8" in verdict.choice.reason
    assert verdict.lines[0] == "FAIL: openvino int8 — d0: mask IoU 0.5000 < 0.9 (worst image 0002)"
    assert "not run: torch int8 — torch does not offer int8" in verdict.lines
    # p90 only from 10 timed calls on; below that the spread is min–max.
    points = {c.label: c.bench[0] for c in report.configs if c.bench}
    assert points["openvino fp32"].p90_ms is None and points["openvino int8"].p90_ms == 1.2


def test_failing_configurations_are_marked_in_every_table(tmp_path):
    from segdeploy.report.render import render_html, render_markdown

    document = _matrix_document()
    markdown = render_markdown(document)
    lines = markdown.splitlines()
    assert lines[0] == "# Verdict: " + __import__("segdeploy.report.document", fromlist=["x"]).read_document(
        document).verdict.headline
    assert lines[2].startswith("- FAIL: openvino int8")
    rows = [line for line in lines if line.startswith("| openvino int8 |")]
    assert len(rows) == 2 and all("| **FAIL** |" in row for row in rows)  # fidelity and throughput tables
    page = render_html(document)
    assert page.count('<tr class="fail"><td>openvino int8</td><td><span class="bad">FAIL</span>') == 2
    assert "min–max 0.9–1.3" in markdown and "p90 1.2" in markdown


def test_published_rows_are_compared_only_on_like_terms():
    from segdeploy.report.document import read_document

    document = _matrix_document()
    row = {"kind": "throughput", "metric": "images_per_s", "value": 10.0, "source": "s", "batch_size": 4}
    document["recipe"]["published"] = [
        {**row, "hardware": "Xeon CPU", "precision": None},
        {**row, "hardware": "Xeon CPU", "precision": "int8"},
        {**row, "hardware": "Ascend 310P", "precision": None},
        {**row, "hardware": "Xeon CPU", "precision": None, "batch_size": 8},
    ]
    rows = read_document(document).published
    # The fastest *passing* configuration at the row's batch size: openvino int8 fails the gate.
    assert rows[0].comparable and rows[0].measured == 20.0 and rows[0].ratio == 2.0
    assert rows[0].measured_config.startswith("openvino fp32")
    assert not rows[1].comparable and "not benchmarked on a passing configuration" in rows[1].reason
    assert not rows[2].comparable and rows[2].ratio is None
    assert "measured on Ascend 310P (an accelerator card), this run on the CPU" in rows[2].reason
    assert not rows[3].comparable and "batch 8" in rows[3].reason
    # Measured at another input size than the guide's: shown, not compared.
    document["recipe"]["input_size"] = [16, 16]
    first = read_document(document).published[0]
    assert first.measured == 20.0 and not first.comparable and "measured at 8x8, published at 16x16" in first.reason


def test_plots_use_real_batch_sizes_y_from_zero_and_one_colour_per_configuration(tmp_path):
    from matplotlib.figure import Figure

    from segdeploy.report import plots
    from segdeploy.report.document import read_document

    document = _matrix_document()
    for unit in document["steps"]["bench"]["result"]["configs"]:
        first = unit["report"]["results"][0]
        unit["report"]["results"] = [dict(first, batch_size=b) for b in (1, 2, 4)]
    report = read_document(document)
    captured = []
    original = Figure.savefig
    try:
        Figure.savefig = lambda fig, *a, **k: (captured.append(fig), original(fig, *a, **k))[1]
        path = plots.plot_throughput(report, tmp_path / "t.png")
    finally:
        Figure.savefig = original
    assert path.is_file()
    (fig,) = captured
    speed, latency = fig.axes
    assert [t.get_text() for t in speed.get_xticklabels()] == ["1", "2", "4"]
    assert speed.get_ylim()[0] == 0 and latency.get_ylim()[0] == 0
    colour = {line.get_label(): line.get_color() for line in speed.get_lines()}
    assert colour["openvino int8 — FAIL gate"] == plots.colours(report.configs)["openvino int8"]
    assert [line.get_linestyle() for line in speed.get_lines() if "FAIL" in line.get_label()] == ["--"]
    assert [l.get_color() for l in latency.get_lines()] == [l.get_color() for l in speed.get_lines()]
    (legend,) = fig.legends  # one legend, outside both axes
    assert legend.get_window_extent().x0 >= speed.get_window_extent().x1


def test_timing_conditions_are_recorded_and_contention_is_said():
    import os
    import time

    from segdeploy.recipes.conditions import watch

    with watch() as watched:
        time.sleep(0.05)
    conditions = watched.conditions
    assert conditions.cpus == os.cpu_count() and conditions.wall_s >= 0.05
    assert conditions.load_before is not None and len(conditions.load_after) == 3
    assert conditions.contended in (True, False) and conditions.basis
    assert conditions.summary().startswith("CONTENDED" if conditions.contended else "quiet")


# ------------------------------------------------------------------------------ headless screenshot
@pytest.mark.slow
def test_report_plots_render_in_headless_chromium(dsb_run, tmp_path):
    """scripts/screenshot_report.py: plots decode in a real browser and the page is not blank."""
    import importlib.util
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "screenshot_report.py"
    spec = importlib.util.spec_from_file_location("screenshot_report", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if module.find_chromium() is None:
        pytest.skip("no chromium (apt-get install -y chromium)")
    run_dir, _, _ = dsb_run
    shot = tmp_path / "shot.png"
    done = subprocess.run([sys.executable, str(script), str(run_dir / "report.html"), "-o", str(shot),
                           "--height", "1600"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ok: plot-throughput renders" in done.stdout
    with Image.open(shot) as image:
        assert image.size == (1280, 1600)
    # A report whose plot payload is corrupt must be caught.
    broken = tmp_path / "broken.html"
    page = (run_dir / "report.html").read_text()
    broken.write_text(re.sub(r'(src="data:image/png;base64,)[^"]+', r"\1AAAA", page, count=1))
    done = subprocess.run([sys.executable, str(script), str(broken), "-o", str(tmp_path / "b.png"),
                           "--height", "800"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "did not render" in done.stderr


def test_openvino_int8_runs_its_own_nncf_ir_and_onnxruntime_int8_the_qdq_model(tmp_path, cache):
    """NNCF's IR (float where the model needs it) passes the gate on the trained U²-Netp where the QDQ
    model run by OpenVINO does not: each int8 row runs its own quantizer's model, both calibrated on
    the same images and both recorded in the export step."""
    pytest.importorskip("nncf")
    from segdeploy.recipes.runner import run_recipe

    results = run_recipe("unetpp-dsb2018", tmp_path / "run", weights="random", device="cpu",
                         backends=["onnxruntime", "openvino"], precisions=["fp32", "int8"], compare_images=2,
                         allow_few_images=True, num_calib=2, skip=("eval", "bench"))
    _assert_valid(results)
    export = results["steps"]["export"]["result"]
    qdq, ir = export["int8"], export["int8_nncf"]
    assert qdq["status"] == ir["status"] == "done"
    assert qdq["onnx"].endswith("-int8.onnx") and qdq["backends"] == ["onnxruntime"] and "QDQ" in qdq["quantizer"]
    assert ir["xml"].endswith(".xml") and ir["backends"] == ["openvino"] and "NNCF" in ir["quantizer"]
    assert ir["quantize"]["method"] == "nncf" and ir["quantize"]["calibration_images"] == 2
    assert qdq["quantize"]["num_calib"] == 2 and len(ir["xml_sha256"]) == len(ir["bin_sha256"]) == 64
    runtimes = {u["label"]: u for u in results["steps"]["runtimes"]["result"]["configs"]}
    assert "NNCF" in runtimes["openvino int8"]["quantizer"] and "QDQ" in runtimes["onnxruntime int8"]["quantizer"]
    assert "quantizer" not in runtimes["openvino fp32"]
    # The two int8 rows depend on different units: a changed IR must not resume the QDQ row's results.
    steps = tmp_path / "run" / "steps"
    assert (json.loads((steps / "runtimes" / "openvino-int8.json").read_text())["fingerprint"]
            != json.loads((steps / "runtimes" / "onnxruntime-int8.json").read_text())["fingerprint"])
    compared = {u["label"]: u for u in results["steps"]["compare"]["result"]["configs"]}
    assert compared["openvino int8"]["status"] in ("done", "failed")  # judged, whatever random weights give
    assert "int8 nncf (openvino)" in (tmp_path / "run" / "report.md").read_text()


def test_without_nncf_openvino_int8_falls_back_to_the_qdq_model(tmp_path, cache, monkeypatch):
    from segdeploy.backends import base
    from segdeploy.recipes import runner

    # as if nncf were not installed: the library it needs is one that does not exist
    monkeypatch.setitem(base.QUANTIZER_LIBRARIES, "nncf", "segdeploy_no_such_module")
    results = runner.run_recipe("unetpp-dsb2018", tmp_path / "run", weights="random", device="cpu",
                                backends=["onnxruntime", "openvino"], precisions=["fp32", "int8"], num_calib=2,
                                skip=("compare", "eval", "bench"))
    export = results["steps"]["export"]["result"]
    assert "int8_nncf" not in export and export["int8"]["backends"] == ["onnxruntime", "openvino"]
    runtimes = {u["label"]: u for u in results["steps"]["runtimes"]["result"]["configs"]}
    assert runtimes["openvino int8"]["status"] == "done" and "QDQ" in runtimes["openvino int8"]["quantizer"]


def test_a_gate_failure_reads_fail_not_error_in_the_verdict():
    """A compare unit that failed its gate is a FAIL with the gate's reasons; a unit that raised is an error."""
    from segdeploy.report.document import gate_of

    done = {"status": "done"}
    gate_failed = {"status": "failed", "error": "gate", "passed": False, "reason": "fidelity gate failed: map_mae",
                   "record": {"failures": ["image chelsea: map_mae 0.05 > 0.04"]}}
    assert gate_of(done, gate_failed, False, {}) == ("fail", ("image chelsea: map_mae 0.05 > 0.04",), None)
    crashed = {"status": "failed", "reason": "RuntimeError: boom"}
    assert gate_of(done, crashed, False, {})[0] == "error"
