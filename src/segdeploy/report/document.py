"""Read a ``results.json`` document into :class:`~segdeploy.report.results.RunReport`.

This module is the one adapter between the runner's JSON records (steps, per-configuration
units, stored for resumption) and the typed view. The fidelity gate is read in one function,
:func:`gate_of`, from whatever the comparison record carries (today a
:class:`segdeploy.verify.compare.CompareRow` as a dict: ``status`` pass/fail/error, ``failures``;
a newer record's ``passed`` and ``reasons`` are read first), so rewiring the gate touches only it.
"""

from __future__ import annotations

from typing import Any

from segdeploy.report.results import (
    MIN_CALLS_FOR_P90,
    STEP_NAMES,
    BenchPoint,
    Comparison,
    ConfigResult,
    Cutout,
    Demo,
    Evaluation,
    Fidelity,
    RunReport,
    StepSummary,
    TimingConditions,
    Weights,
)


def _reference_key() -> tuple[str, str]:
    """(backend, precision) of the configuration the others are judged against."""
    from segdeploy.backends import module_backends

    return module_backends()[0], "fp32"


def _units(doc: dict[str, Any], step: str) -> dict[tuple[str, str], dict[str, Any]]:
    result = (doc["steps"].get(step) or {}).get("result") or {}
    return {(u.get("backend"), u.get("precision")): u for u in result.get("configs", []) or []}


def gate_of(runtime: dict[str, Any] | None, compare: dict[str, Any] | None, reference: bool,
            compare_step: dict[str, Any]) -> tuple[str, tuple[str, ...], str | None]:
    """(gate, reasons, why-not-run) of one configuration from its runtime and compare records."""
    if runtime is None or runtime.get("status") != "done":
        why = (runtime or {}).get("reason") or "not opened"
        return ("not run" if (runtime or {}).get("status") != "failed" else "error"), (), why
    if reference:
        return "reference", (), None
    if compare is None:
        return "not checked", (), compare_step.get("reason") or "not compared"
    record = compare.get("record") or {}
    reasons = tuple(record.get("reasons") or record.get("failures") or ())
    if compare.get("status") == "failed" and compare.get("error") != "gate":
        return "error", reasons or (str(compare.get("reason")),), None
    if compare.get("status") == "skipped":
        return "not checked", (), compare.get("reason")
    passed = record.get("passed")
    if passed is None:
        passed = compare.get("passed")
    if passed is None:
        passed = record.get("status") == "pass"
    return ("pass" if passed else "fail"), (() if passed else reasons or (str(compare.get("reason") or "gate failed"),)), None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None


def _fidelity(unit: dict[str, Any] | None) -> Fidelity | None:
    summary = (unit or {}).get("summary")
    if not summary:
        return None
    return Fidelity(images=summary.get("images"), cosine=_number(summary.get("cosine")),
                    rel=_number(summary.get("rel")), rel_output=summary.get("rel_output"),
                    mask_iou=_number(summary.get("mask_iou")), map_mae=_number(summary.get("map_mae")),
                    pixel_agreement=_number(summary.get("pixel_agreement")), gt_metric=summary.get("gt_metric"),
                    gt_reference=_number(summary.get("gt_reference")),
                    gt_candidate=_number(summary.get("gt_candidate")), notes=tuple(summary.get("notes") or ()))


def _bench(unit: dict[str, Any] | None) -> tuple[BenchPoint, ...]:
    report = (unit or {}).get("report") or {}
    points = []
    for row in report.get("results", []) or []:
        latency = row.get("latency") or {}
        calls = int(latency.get("count") or row.get("batches") or 0)
        points.append(BenchPoint(
            batch_size=int(row["batch_size"]), images_per_s=float(row["images_per_s"]),
            median_ms=float(latency.get("median_ms", 0.0)), min_ms=float(latency.get("min_ms", 0.0)),
            max_ms=float(latency.get("max_ms", 0.0)), calls=calls,
            ms_per_image=float(row.get("ms_per_image") or latency.get("median_ms", 0.0) / row["batch_size"]),
            p90_ms=float(latency["p90_ms"]) if calls >= MIN_CALLS_FOR_P90 and "p90_ms" in latency else None,
            best=bool(row.get("best"))))
    return tuple(points)


def _evaluation(unit: dict[str, Any] | None) -> Evaluation | None:
    record = (unit or {}).get("record")
    if not record:
        return None
    metrics = {k: _number(v) for k, v in (record.get("metrics") or {}).items() if not isinstance(v, (dict, list))}
    return Evaluation(metrics=metrics, images_scored=record.get("images_scored"),
                      images_skipped=record.get("images_skipped"), images_per_s=_number(record.get("images_per_s")))


def read_configs(doc: dict[str, Any]) -> tuple[ConfigResult, ...]:
    """One :class:`ConfigResult` per backend x precision of the run's matrix, in matrix order."""
    runtimes, compares = _units(doc, "runtimes"), _units(doc, "compare")
    benches, evals = _units(doc, "bench"), _units(doc, "eval")
    steps = doc["steps"]
    options = doc["options"]
    out = []
    for backend in options["backends"]:
        for precision in options["precisions"]:
            key = (backend, precision)
            runtime = runtimes.get(key)
            if runtime is None and steps["runtimes"]["status"] != "done":
                runtime = {"status": "skipped", "reason": f"runtimes step {steps['runtimes']['status']}: "
                                                          f"{steps['runtimes'].get('reason')}"}
            gate, reasons, why = gate_of(runtime, compares.get(key), key == _reference_key(), steps["compare"])
            bench_unit, eval_unit = benches.get(key), evals.get(key)
            out.append(ConfigResult(
                label=f"{backend} {precision}", backend=backend, precision=precision, gate=gate, reason=why,
                gate_reasons=reasons, fidelity=_fidelity(compares.get(key)), bench=_bench(bench_unit),
                bench_reason=(bench_unit or {}).get("reason") if (bench_unit or {}).get("status") != "done" else None,
                bench_conditions=TimingConditions.from_dict((bench_unit or {}).get("conditions")),
                evaluation=_evaluation(eval_unit),
                eval_reason=(eval_unit or {}).get("reason") if (eval_unit or {}).get("status") not in (None, "done")
                else None))
    return tuple(out)


def _step_brief(name: str, step: dict[str, Any]) -> str:
    result = step.get("result") or {}
    if name == "export" and result.get("onnx"):
        text = str(result["onnx"])
        # One int8 model per quantizer (QDQ for ONNX Runtime, NNCF IR for OpenVINO), each named
        # with the backends that run it so the reader knows which model a row measured.
        for int8 in (result.get(k) for k in ("int8", "int8_nncf")):
            if not int8:
                continue
            users = f" ({', '.join(int8['backends'])})" if int8.get("backends") else ""
            text += (f"; {int8.get('label')}{users}: {int8.get('onnx') or int8.get('xml')}"
                     if int8.get("status") == "done" else f"; {int8.get('label')} {int8.get('status')}: "
                                                          f"{int8.get('reason')}")
        return text
    if "configs" in result:
        counts: dict[str, int] = {}
        for unit in result["configs"]:
            counts[unit["status"]] = counts.get(unit["status"], 0) + 1
        return ", ".join(f"{v} {k}" for k, v in counts.items()) + " configuration(s)"
    if name == "report" and result:
        return ", ".join(result.get("files", []))
    return ""


def measured_on(doc: dict[str, Any]) -> str:
    """The hardware of this run, in words (the GPU on CUDA, else the CPU and its count)."""
    env = doc.get("environment") or {}
    if str(doc["options"].get("device", "cpu")).startswith("cuda") and env.get("gpu"):
        return f"{env['gpu'].get('name')} (this run)"
    return f"{env.get('cpu', 'CPU')}, {env.get('cpu_count', '?')} CPUs (this run)"


def published_rows(doc: dict[str, Any]) -> tuple[Comparison, ...]:
    """The recipe's published numbers as Comparisons with nothing measured yet."""
    rows = []
    for pub in doc["recipe"]["published"]:
        rows.append(Comparison(
            kind=pub["kind"], metric=pub["metric"], source=pub["source"], hardware=pub["hardware"],
            published=float(pub["value"]), measured=None, comparable=bool(pub.get("comparable", True)),
            reason=pub.get("note", ""), batch_size=pub.get("batch_size"), precision=pub.get("precision"),
            precision_label=pub.get("precision_label", ""), dataset=pub.get("dataset"), model=pub.get("model"),
            software=pub.get("software", "")))
    return tuple(rows)


def _environment(doc: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    env = doc.get("environment") or {}
    rows = [(k, str(env.get(k))) for k in ("time_utc", "command", "python", "platform", "cpu", "cpu_count")]
    rows += [(f"gpu {k}", str(v)) for k, v in (env.get("gpu") or {}).items()]
    rows += [(f"package {k}", v or "not installed") for k, v in (env.get("packages") or {}).items()]
    return tuple(rows)


def _runtime_lines(doc: dict[str, Any]) -> tuple[str, ...]:
    step = doc["steps"]["runtimes"]
    lines = []
    for unit in (step.get("result") or {}).get("configs", []) or []:
        desc = unit.get("describe") or {}
        brief = ", ".join(f"{k}={v}" for k, v in desc.items() if not isinstance(v, (dict, list)))
        lines.append(f"{unit['label']}: {unit['status']}" + (f" — {unit['reason']}" if unit.get("reason") else "")
                     + (f" — int8 by {unit['quantizer']}" if unit.get("quantizer") else "")
                     + (f" — {brief}" if brief else ""))
    return tuple(lines)


def _demo(doc: dict[str, Any]) -> Demo | None:
    demo = doc.get("demo")
    if not demo:
        return None
    cutouts = tuple(Cutout(file=c["file"], title=c.get("title", ""), credit=c.get("credit", ""),
                           licence=c.get("licence", ""), subject=bool(c.get("subject", True)),
                           cutout=c.get("cutout"), mask=c.get("mask"), foreground=c.get("foreground"))
                    for c in demo.get("cutouts", []) or [])
    return Demo(notice=demo.get("notice", ""), photos_dir=demo.get("photos_dir", ""), cutouts=cutouts,
                configuration=demo.get("configuration"), weights_note=demo.get("weights_note", ""),
                answer=demo.get("answer", ""), auto=demo.get("auto", ""))


def read_document(doc: dict[str, Any]) -> RunReport:
    """The typed view of a results document (verdict and published rows recomputed from it)."""
    from segdeploy.report.published import pair_published
    from segdeploy.report.verdict import make_verdict

    recipe, options, steps = doc["recipe"], doc["options"], doc["steps"]
    configs = read_configs(doc)
    step_rows = tuple(StepSummary(name=n, status=steps[n]["status"], reason=steps[n].get("reason"),
                                  wall_s=steps[n].get("wall_s"), resumed=bool(steps[n].get("resumed")),
                                  brief=_step_brief(n, steps[n])) for n in STEP_NAMES if n in steps)
    weights = doc["weights"]
    typed_weights = Weights(kind=weights["kind"], path=weights.get("path"), sha256=weights.get("sha256"),
                            seed=weights.get("seed"), how_to_get=weights.get("how_to_get") or "")
    compare = steps["compare"].get("result") or {}
    evaluation = steps["eval"].get("result") or {}
    where = measured_on(doc)
    published = pair_published(published_rows(doc), configs, model=options["model"], dataset=options.get("dataset"),
                               random_weights=typed_weights.random, device=options["device"],
                               measured_input=options.get("input_size"), published_input=recipe.get("input_size"),
                               measured_on=where, evaluated=steps["eval"]["status"] == "done")
    return RunReport(
        schema=doc["schema"], created_utc=doc["created_utc"], updated_utc=doc["updated_utc"],
        recipe_name=recipe["name"], recipe_title=recipe["title"], guide=recipe["guide"], recipe_model=recipe["model"],
        headline_metric=recipe["headline"], metrics=tuple(recipe.get("metrics") or ()),
        recipe_notes=tuple(recipe.get("notes") or ()), model=options["model"], device=options["device"],
        backends=tuple(options["backends"]), precisions=tuple(options["precisions"]),
        batch_sizes=tuple(options["batch_sizes"]), input_size=tuple(options.get("input_size") or (0, 0)),
        dataset=options.get("dataset"), data_root=options.get("data_root"), limit=options.get("limit"),
        bench_warmup=int(options.get("bench_warmup") or 0), bench_iters=int(options.get("bench_iters") or 0),
        weights=typed_weights, steps=step_rows, configs=configs,
        verdict=make_verdict(configs, step_rows), published=published, warnings=tuple(doc.get("warnings") or ()),
        measured_on=where, environment=_environment(doc), compare_reference=compare.get("reference", ""),
        compare_inputs=compare.get("inputs", ""), compare_gate=compare.get("gate", ""),
        eval_note=evaluation.get("note") or "", runtime_lines=_runtime_lines(doc), demo=_demo(doc))


def summarise(doc: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(verdict, published_vs_measured) of a results document, as the JSON results.json carries."""
    import dataclasses
    import json

    report = read_document(doc)
    # Through JSON: tuples become lists, as a reader of results.json (and the schema) sees them.
    plain = json.loads(json.dumps({"verdict": dataclasses.asdict(report.verdict),
                                   "published": [dataclasses.asdict(row) for row in report.published]}))
    return plain["verdict"], plain["published"]
