"""``results.json`` of a ``segdeploy run`` → ``report.md`` and a self-contained ``report.html``.

``results.json`` is the source of truth; everything here is a rendering of it (plus two PNG plots,
written next to the reports and embedded in the HTML as base64 ``data:`` URIs, so the HTML file can
be mailed or archived alone). :func:`validate_results` checks a results document against
:data:`RESULTS_SCHEMA` (a JSON-Schema subset checked by hand, no dependency) and the rules a schema
cannot say (a skipped step has a reason, a weights file has its sha256, ...).

Layout of ``results.json`` (``schema`` = ``segdeploy.run/1``)::

    recipe            the Recipe as data, including every published row
    options           what this run did (model, weights, dataset, matrix, limits, bench settings)
    model             registry facts of the model run
    weights           {"kind": "file", "path", "sha256"} or {"kind": "random", "seed"}, + how_to_get
    environment       segdeploy.core.environment.environment()
    steps             {export, runtimes, compare, eval, bench, report}: each {status, reason,
                      result, wall_s, resumed, started_utc, fingerprint}; result.configs holds one
                      entry per backend/precision with its own status and reason
    published_vs_measured   one row per published number, with the measured counterpart
    warnings          what a reader must know first (random weights, failed steps, gates)
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any

SCHEMA_ID = "segdeploy.run/1"
STEP_NAMES = ("export", "runtimes", "compare", "eval", "bench", "report")
STEP_STATUSES = ("done", "skipped", "failed")
UNIT_STATUSES = ("done", "skipped", "failed")

_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_NUM = {"type": ["number", "null"]}

_UNIT = {
    "type": "object",
    "required": ["label", "backend", "precision", "status", "reason"],
    "properties": {
        "label": {"type": "string"},
        "backend": {"type": "string"},
        "precision": {"type": "string"},
        "status": {"enum": list(UNIT_STATUSES)},
        "reason": _NULLABLE_STR,
    },
}

_STEP = {
    "type": "object",
    "required": ["status", "reason", "result", "wall_s", "resumed"],
    "properties": {
        "status": {"enum": list(STEP_STATUSES)},
        "reason": _NULLABLE_STR,
        "result": {"type": ["object", "null"]},
        "wall_s": _NULLABLE_NUM,
        "resumed": {"type": "boolean"},
        "started_utc": _NULLABLE_STR,
        "fingerprint": _NULLABLE_STR,
    },
}


def _with_configs(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A step schema whose result (when present) lists per-configuration units."""
    unit = json.loads(json.dumps(_UNIT))
    if extra:
        unit["properties"].update(extra)
    step = json.loads(json.dumps(_STEP))
    step["properties"]["result"] = {
        "type": ["object", "null"],
        "required": ["configs"],
        "properties": {"configs": {"type": "array", "items": unit}},
    }
    return step


#: The results.json schema (JSON Schema draft 2020-12 subset: type, enum, const, required,
#: properties, items, minimum, minItems, pattern). ``jsonschema`` accepts it as is.
RESULTS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "segdeploy run results",
    "type": "object",
    "required": ["schema", "created_utc", "updated_utc", "recipe", "options", "model", "weights", "environment",
                 "steps", "published_vs_measured", "warnings"],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "created_utc": {"type": "string"},
        "updated_utc": {"type": "string"},
        "run_dir": {"type": "string"},
        "recipe": {
            "type": "object",
            "required": ["name", "title", "guide", "model", "headline", "published"],
            "properties": {
                "name": {"type": "string"},
                "model": {"type": "string"},
                "dataset": _NULLABLE_STR,
                "published": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["kind", "metric", "value", "source", "hardware"],
                        "properties": {"kind": {"enum": ["accuracy", "throughput"]}, "value": {"type": "number"}},
                    },
                },
            },
        },
        "options": {
            "type": "object",
            "required": ["recipe", "model", "weights", "device", "backends", "precisions", "batch_sizes"],
            "properties": {
                "backends": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "precisions": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "batch_sizes": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1},
                "limit": {"type": ["integer", "null"], "minimum": 1},
            },
        },
        "model": {"type": "object", "required": ["name", "task"], "properties": {"name": {"type": "string"}}},
        "weights": {
            "type": "object",
            "required": ["kind"],
            "properties": {
                "kind": {"enum": ["file", "random"]},
                "sha256": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"},
                "seed": {"type": ["integer", "null"]},
                "path": _NULLABLE_STR,
            },
        },
        "environment": {"type": "object", "required": ["python", "packages"]},
        "steps": {
            "type": "object",
            "required": list(STEP_NAMES),
            "properties": {
                "export": _STEP,
                "runtimes": _with_configs(),
                "compare": _with_configs({"passed": {"type": ["boolean", "null"]}}),
                "eval": _with_configs({"record": {"type": ["object", "null"]}}),
                "bench": _with_configs({"report": {"type": ["object", "null"]}}),
                "report": _STEP,
            },
        },
        "published_vs_measured": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["kind", "metric", "source", "hardware", "published", "measured", "comparable", "note"],
                "properties": {
                    "published": {"type": "number"},
                    "measured": _NULLABLE_NUM,
                    "comparable": {"type": "boolean"},
                    "note": {"type": "string"},
                },
            },
        },
        "warnings": {"type": "array", "items": {"type": "string"}},
    },
}

_TYPES = {
    "object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
}


def _type_ok(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def _check(value: Any, schema: dict[str, Any], path: str, errors: list[str]) -> None:
    import re

    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: expected {schema['const']!r}, found {value!r}")
        return
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
        return
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_ok(value, n) for n in names):
            errors.append(f"{path}: expected {' or '.join(names)}, found {type(value).__name__}")
            return
    if isinstance(value, (int, float)) and not isinstance(value, bool) and "minimum" in schema:
        if value < schema["minimum"]:
            errors.append(f"{path}: {value} is below the minimum {schema['minimum']}")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                errors.append(f"{path}: missing required key {key!r}")
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                _check(value[key], sub, f"{path}.{key}", errors)
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{path}: needs at least {schema['minItems']} item(s), found {len(value)}")
        if "items" in schema:
            for index, item in enumerate(value):
                _check(item, schema["items"], f"{path}[{index}]", errors)


def validate_results(data: Any) -> list[str]:
    """Every problem of a results document, as ``path: message`` lines (empty list = valid).

    Checks :data:`RESULTS_SCHEMA`, then rules a schema cannot express: a skipped or failed step or
    configuration says why; a done step has a result; a weights file carries its sha256; every
    published row of the recipe appears in ``published_vs_measured``.
    """
    errors: list[str] = []
    _check(data, RESULTS_SCHEMA, "$", errors)
    if errors:
        return errors
    for name in STEP_NAMES:
        step = data["steps"][name]
        where = f"$.steps.{name}"
        if step["status"] in ("skipped", "failed") and not step["reason"]:
            errors.append(f"{where}: status {step['status']} needs a reason")
        if step["status"] == "done" and step["result"] is None:
            errors.append(f"{where}: status done needs a result")
        for index, unit in enumerate((step["result"] or {}).get("configs", []) or []):
            if unit["status"] in ("skipped", "failed") and not unit["reason"]:
                errors.append(f"{where}.result.configs[{index}]: status {unit['status']} needs a reason")
    weights = data["weights"]
    if weights["kind"] == "file" and not weights.get("sha256"):
        errors.append("$.weights: a weights file needs its sha256")
    if weights["kind"] == "random" and weights.get("seed") is None:
        errors.append("$.weights: random weights need their seed")
    if len(data["published_vs_measured"]) != len(data["recipe"]["published"]):
        errors.append(f"$.published_vs_measured: {len(data['published_vs_measured'])} rows for "
                      f"{len(data['recipe']['published'])} published numbers")
    return errors


def check_results(data: Any) -> None:
    """Raise ValueError listing every problem :func:`validate_results` finds."""
    errors = validate_results(data)
    if errors:
        raise ValueError("results.json does not match the segdeploy.run/1 schema:\n  " + "\n  ".join(errors))


# ----------------------------------------------------------------------------- published vs measured
def _units(results: dict[str, Any], step: str) -> list[dict[str, Any]]:
    result = results["steps"].get(step, {}).get("result") or {}
    return [u for u in result.get("configs", []) if u.get("status") == "done"]


def _bench_points(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per (configuration, batch size) measured: label, precision, batch, images/s."""
    points = []
    for unit in _units(results, "bench"):
        report = unit.get("report") or {}
        for row in report.get("results", []):
            points.append({"label": unit["label"], "backend": unit["backend"], "precision": unit["precision"],
                           "batch_size": row["batch_size"], "images_per_s": row["images_per_s"],
                           "median_ms": row["latency"]["median_ms"], "p90_ms": row["latency"]["p90_ms"]})
    return points


def measured_on(results: dict[str, Any]) -> str:
    env = results.get("environment") or {}
    device = results.get("options", {}).get("device", "cpu")
    if str(device).startswith("cuda") and env.get("gpu"):
        return f"{env['gpu'].get('name')} (this run)"
    return f"{env.get('cpu', 'CPU')}, {env.get('cpu_count', '?')} CPUs (this run)"


def published_vs_measured(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Pair every published row of the recipe with this run's counterpart.

    Accuracy rows are compared with the evaluation of the configuration with the row's precision
    when one was evaluated, else the first evaluated configuration (the reference); ``cosine`` rows
    with the lowest cosine similarity of the compare step. Throughput rows are compared with the
    fastest configuration measured at the row's batch size (same precision when the row states
    one). ``ratio`` = measured / published. Rows measured on other hardware are only indicative.
    """
    recipe = results["recipe"]
    options = results["options"]
    model = options.get("model")
    dataset = options.get("dataset")
    evals = _units(results, "eval")
    compares = _units(results, "compare")
    points = _bench_points(results)
    where = measured_on(results)
    rows = []
    for pub in recipe["published"]:
        row = {key: pub.get(key) for key in ("kind", "metric", "source", "hardware", "software", "batch_size",
                                              "precision", "precision_label", "dataset", "model")}
        row.update(published=pub["value"], measured=None, measured_config=None, measured_on=where, ratio=None,
                   comparable=bool(pub.get("comparable", True)), note=pub.get("note", ""))
        notes = [row["note"]] if row["note"] else []
        if pub.get("model") and pub["model"] != model:
            row["comparable"] = False
            notes.append(f"published for {pub['model']}; this run used {model}")
        if pub["kind"] == "accuracy" and pub["metric"] == "cosine":
            values = [(u["label"], _cosine(u)) for u in compares]
            values = [(label, v) for label, v in values if v is not None]
            if values:
                label, value = min(values, key=lambda item: item[1])
                row.update(measured=value, measured_config=f"{label} (lowest of {len(values)})")
            else:
                notes.append("not measured: the compare step has no result")
        elif pub["kind"] == "accuracy":
            if results["weights"]["kind"] == "random" and row["comparable"]:
                row["comparable"] = False
                notes.append("random weights: the measured score says nothing about the model")
            if pub.get("dataset") and pub["dataset"] != dataset:
                notes.append(f"not measured: this run scored {dataset or 'no dataset'}")
            else:
                chosen = [u for u in evals if pub.get("precision") and u["precision"] == pub["precision"]] or evals
                value = _metric(chosen[0], pub["metric"]) if chosen else None
                if value is None:
                    notes.append("not measured: no evaluation result" if not chosen else
                                 f"metric {pub['metric']} not in the evaluation")
                else:
                    row.update(measured=value, measured_config=chosen[0]["label"])
        else:
            measured_hw, published_hw = options.get("input_size"), recipe.get("input_size")
            if measured_hw and published_hw and list(measured_hw) != list(published_hw) and row["comparable"]:
                row["comparable"] = False
                notes.append(f"measured at {'x'.join(map(str, measured_hw))}, published at "
                             f"{'x'.join(map(str, published_hw))}")
            candidates = [p for p in points if p["batch_size"] == pub.get("batch_size")]
            if pub.get("precision"):
                candidates = [p for p in candidates if p["precision"] == pub["precision"]]
            if candidates:
                best = max(candidates, key=lambda p: p["images_per_s"])
                row.update(measured=best["images_per_s"], measured_config=f"{best['label']} (fastest of "
                           f"{len(candidates)})")
            else:
                notes.append(f"not measured: batch {pub.get('batch_size')}"
                             + (f" {pub['precision']}" if pub.get("precision") else "")
                             + " was not benchmarked")
        if row["measured"] is not None and row["comparable"] and pub["value"]:
            row["ratio"] = row["measured"] / pub["value"]
        row["note"] = "; ".join(notes)
        rows.append(row)
    return rows


def _metric(unit: dict[str, Any], key: str) -> float | None:
    metrics = (unit.get("record") or {}).get("metrics") or {}
    value = metrics.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def _cosine(unit: dict[str, Any]) -> float | None:
    value = (unit.get("summary") or {}).get("cosine")
    return float(value) if isinstance(value, (int, float)) else None


# ------------------------------------------------------------------------------------------ plots
def make_plots(results: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write the report's PNG plots into ``out_dir``; returns {name: path} of those written.

    ``throughput``: images/s and p50/p90 latency per batch against batch size, one line per
    backend/precision (:func:`segdeploy.bench.harness.plot_reports`). ``published``: this run's images/s
    beside the guide's published rows, per batch size (log scale: they differ by orders).
    """
    out_dir = Path(out_dir)
    plots: dict[str, Path] = {}
    reports = [u["report"] for u in _units(results, "bench") if u.get("report")]
    if reports:
        from segdeploy.bench.harness import BenchReport, plot_reports

        plots["throughput"] = plot_reports([BenchReport.from_dict(r) for r in reports], out_dir / "throughput.png")
        published = [p for p in results["recipe"]["published"] if p["kind"] == "throughput"]
        if published:
            plots["published"] = _plot_published(results, published, out_dir / "published_vs_measured.png")
    return plots


def _plot_published(results: dict[str, Any], published: list[dict[str, Any]], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    groups: dict[str, list[tuple[int, float]]] = {}
    for row in published:
        if row.get("batch_size") is None:
            continue
        wording = row.get("precision_label") or ""
        shown = wording if (row.get("precision") or (wording and "not stated" not in wording)) else ""
        label = f"{row['hardware']} {shown}".strip()
        groups.setdefault(f"published: {label}", []).append((row["batch_size"], row["value"]))
    for index, (label, pts) in enumerate(sorted(groups.items())):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "--", marker="x", color=f"C{index % 10}",
                alpha=0.75, label=label)
    measured: dict[str, list[tuple[int, float]]] = {}
    for point in _bench_points(results):
        measured.setdefault(f"this run: {point['label']}", []).append((point["batch_size"], point["images_per_s"]))
    for index, (label, pts) in enumerate(sorted(measured.items())):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", linewidth=2.2, color=f"C{(index + 5) % 10}",
                label=label)
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    sizes = sorted({r["batch_size"] for r in published if r.get("batch_size")} |
                   {p["batch_size"] for p in _bench_points(results)})
    ax.set_xticks(sizes)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s (log)")
    ax.set_title(f"{results['recipe']['name']}: published (dashed) vs this run (solid) — "
                 f"{measured_on(results)}", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


# ------------------------------------------------------------------------------------ formatting
def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        if abs(value) >= 100:
            return f"{value:,.1f}"
        return f"{value:.{digits}f}"
    return str(value)


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}×"


def _status(step: dict[str, Any]) -> str:
    text = step["status"] + (" (stored)" if step.get("resumed") else "")
    return text


_METRIC_NAMES = {"images_per_s": "images/s"}


def _fmt_metric(key: str, value: Any) -> str:
    if key == "images_per_s":
        return _num(value, 1)
    return _num(value, 4)


def _sections(results: dict[str, Any]) -> list[tuple[str, str, list[str], list[list[str]] | None, list[str]]]:
    """The report as data: (anchor, title, paragraphs, table rows (header first) or None, after)."""
    recipe, options, steps = results["recipe"], results["options"], results["steps"]
    weights = results["weights"]
    out = []

    # Summary
    if weights["kind"] == "random":
        wtext = f"random weights (seed {weights.get('seed')}) — accuracy figures are meaningless"
    else:
        wtext = f"{weights.get('path')} (sha256 {weights.get('sha256')})"
    summary = [
        f"Recipe **{recipe['name']}** — {recipe['title']}; seed guide {recipe['guide']}.",
        f"Model **{options['model']}**" + (f" (recipe default {recipe['model']})" if options['model'] != recipe['model']
                                           else "") + f"; weights: {wtext}.",
        f"Dataset: {options.get('dataset') or 'none'}" + (f" at {options.get('data_root')}" if options.get('data_root')
                                                           else "") +
        (f", first {options['limit']} samples" if options.get("limit") else "") + ".",
        f"Device {options['device']}; backends {', '.join(options['backends'])}; precisions "
        f"{', '.join(options['precisions'])}; batch sizes {', '.join(map(str, options['batch_sizes']))}; "
        f"benchmark input {'x'.join(map(str, options['input_size']))}.",
    ]
    if results.get("demo"):
        demo = results["demo"]
        summary.append(f"**Demo run**: {demo.get('images')} generated photo-like images (seed {demo.get('seed')}) "
                       f"in {demo.get('data_root')}. {demo.get('notice', '')}")
    rows = [["step", "status", "time, s", "reason / result"]]
    for name in STEP_NAMES:
        step = steps[name]
        rows.append([name, _status(step), _num(step.get("wall_s"), 1), step.get("reason") or _step_brief(name, step)])
    out.append(("summary", "Summary", summary, rows, []))

    out.append(("warnings", "Read this first", [w for w in results["warnings"]] or ["No warnings."], None, []))

    # Published vs measured
    rows = [["kind", "metric", "source", "hardware", "batch", "precision", "published", "measured", "measured with",
             "measured / published", "note"]]
    ordered = sorted(results["published_vs_measured"], key=lambda r: r["measured"] is None)
    for row in ordered:
        rows.append([row["kind"], _METRIC_NAMES.get(row["metric"], row["metric"]), row["source"], row["hardware"],
                     _num(row.get("batch_size")),
                     row.get("precision_label") or row.get("precision") or "—",
                     _fmt_metric(row["metric"], row["published"]),
                     _fmt_metric(row["metric"], row["measured"]), row.get("measured_config") or "—",
                     _ratio(row.get("ratio")) if row["comparable"] else "not comparable", row["note"]])
    out.append(("published", "Published vs measured", [
        f"Every number seed guide {recipe['guide']} printed, beside this run's counterpart measured on "
        f"{measured_on(results)}. Throughput rows from other hardware are context, not a target."], rows, []))

    # Fidelity
    step = steps["compare"]
    paras = []
    rows = None
    if step["status"] != "done":
        paras.append(f"Compare step {step['status']}: {step.get('reason')}")
    else:
        res = step["result"]
        paras.append(f"Reference: {res.get('reference')}; inputs: {res.get('inputs')}. "
                     f"Gate: {res.get('gate') or 'see each row'}.")
        rows = [["configuration", "status", "gate", "min cosine", "worst rel. error", "mask IoU", "map MAE",
                 "pixel agreement", "GT metric ref → this", "failures / notes"]]
        for unit in res["configs"]:
            s = unit.get("summary") or {}
            gt = "—"
            if s.get("gt_reference") is not None:
                gt = f"{_num(s['gt_reference'], 4)} → {_num(s.get('gt_candidate'), 4)}"
            rel = _num(s.get("rel"), 6) + (f" ({s['rel_output']})" if s.get("rel_output") else "")
            rows.append([unit["label"], unit["status"], {True: "pass", False: "FAIL", None: "—"}[unit.get("passed")],
                         _num(s.get("cosine"), 6), rel, _num(s.get("mask_iou"), 4), _num(s.get("map_mae"), 5),
                         _num(s.get("pixel_agreement"), 4), gt,
                         unit.get("reason") or "; ".join(s.get("failures", []) + s.get("notes", []))])
        gts = {(u.get("summary") or {}).get("gt_metric") for u in res["configs"]} - {None}
        if gts:
            paras.append(f"GT metric: {', '.join(sorted(gts))}, of the reference and of each configuration on "
                         "the compared images.")
    out.append(("fidelity", "Fidelity against PyTorch fp32", paras, rows, []))

    # Accuracy
    step = steps["eval"]
    paras, rows = [], None
    if step["status"] != "done":
        paras.append(f"Evaluation step {step['status']}: {step.get('reason')}")
    else:
        metrics = list(recipe.get("metrics") or [])
        rows = [["configuration", "status", "images scored", "skipped"] + metrics + ["images/s"]]
        for unit in step["result"]["configs"]:
            record = unit.get("record") or {}
            values = record.get("metrics") or {}
            rows.append([unit["label"], unit["status"] + (f": {unit['reason']}" if unit.get("reason") else ""),
                         _num(record.get("images_scored")), _num(record.get("images_skipped"))]
                        + [_num(values.get(k), 4) for k in metrics] + [_num(record.get("images_per_s"), 2)])
        first = next((u.get("record") for u in step["result"]["configs"] if u.get("record")), None)
        if first:
            ds = first.get("dataset") or {}
            paras.append(f"Dataset {ds.get('dataset', ds.get('name', options.get('dataset')))}: "
                         f"{first.get('images_scored')} images scored. Policy: "
                         f"{(first.get('policy') or {}).get('decode', '')}. Headline metric: {recipe['headline']}.")
        if step["result"].get("note"):
            paras.append(step["result"]["note"])
        if weights["kind"] == "random":
            paras.append("**Random weights: these scores say nothing about the model.**")
    out.append(("accuracy", "Accuracy", paras, rows, []))

    # Throughput
    step = steps["bench"]
    paras, rows = [], None
    if step["status"] != "done":
        paras.append(f"Benchmark step {step['status']}: {step.get('reason')}")
    else:
        settings = step["result"].get("settings") or {}
        paras.append(f"Pure inference on seeded random input "
                     f"{'x'.join(map(str, settings.get('input_size', options['input_size'])))}; "
                     f"per batch size the runtime's own warm-up, {settings.get('warmup')} more untimed and "
                     f"{settings.get('iters')} timed calls. "
                     "A latency is one runtime call on a whole batch. Throughput = images actually processed / "
                     "wall time.")
        rows = [["configuration", "batch", "images/s", "median ms", "p90 ms", "ms / image", "timed calls", "best"]]
        for unit in step["result"]["configs"]:
            report = unit.get("report")
            if not report:
                rows.append([unit["label"], "—", "—", "—", "—", "—", "—", f"{unit['status']}: {unit.get('reason')}"])
                continue
            for r in report["results"]:
                rows.append([unit["label"], str(r["batch_size"]), _num(r["images_per_s"], 2),
                             _num(r["latency"]["median_ms"], 1), _num(r["latency"]["p90_ms"], 1),
                             _num(r["ms_per_image"], 1), _num(r["batches"]), "best" if r.get("best") else ""])
    out.append(("throughput", "Throughput and latency", paras, rows, []))

    # Environment
    env = results["environment"]
    packages = env.get("packages") or {}
    rows = [["item", "value"]] + [[k, _num(env.get(k))] for k in ("time_utc", "command", "python", "platform", "cpu",
                                                                    "cpu_count")]
    if env.get("gpu"):
        rows += [[f"gpu {k}", _num(v)] for k, v in env["gpu"].items()]
    rows += [[f"package {k}", v or "not installed"] for k, v in packages.items()]
    rt = steps["runtimes"]
    after = []
    if rt["status"] == "done":
        for unit in rt["result"]["configs"]:
            desc = unit.get("describe") or {}
            brief = ", ".join(f"{k}={v}" for k, v in desc.items() if not isinstance(v, (dict, list)))
            after.append(f"{unit['label']}: {unit['status']}" + (f" — {unit['reason']}" if unit.get("reason") else "")
                         + (f" — {brief}" if brief else ""))
    out.append(("environment", "Environment", [], rows, after))
    return out


def _step_brief(name: str, step: dict[str, Any]) -> str:
    result = step.get("result") or {}
    if name == "export" and result:
        text = f"{result.get('onnx')}"
        int8 = result.get("int8")
        if int8:
            text += f"; int8: {int8.get('onnx')}" if int8.get("status") == "done" else \
                f"; int8 {int8.get('status')}: {int8.get('reason')}"
        return text
    if "configs" in result:
        counts: dict[str, int] = {}
        for unit in result["configs"]:
            counts[unit["status"]] = counts.get(unit["status"], 0) + 1
        return ", ".join(f"{v} {k}" for k, v in counts.items()) + " configuration(s)"
    if name == "report" and result:
        return ", ".join(result.get("files", []))
    return ""


# ----------------------------------------------------------------------------------------- render
def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(results: dict[str, Any], plots: dict[str, str] | None = None) -> str:
    """The report in Markdown; ``plots`` maps plot name to a path relative to the report."""
    recipe = results["recipe"]
    lines = [f"# segdeploy run — {recipe['name']}", "",
             f"_{recipe['title']}_ — generated {results['updated_utc']} from results.json ({results['schema']})", ""]
    for anchor, title, paras, rows, after in _sections(results):
        lines += [f"## {title}", ""]
        for para in paras:
            lines += [para if anchor != "warnings" else f"- **{para}**", ""]
        if anchor == "throughput" and plots:
            for name in ("throughput", "published"):
                if name in plots:
                    lines += [f"![{name}]({plots[name]})", ""]
        if rows:
            lines.append("| " + " | ".join(_md_cell(c) for c in rows[0]) + " |")
            lines.append("|" + "|".join(" --- " for _ in rows[0]) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows[1:]]
            lines.append("")
        for para in after:
            lines += [f"- {para}"]
        if after:
            lines.append("")
    if recipe.get("notes"):
        lines += ["## Recipe notes", ""] + [f"- {n}" for n in recipe["notes"]] + [""]
    return "\n".join(lines)


_CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;
color:#1d2330;line-height:1.45;padding:0 16px}
h1{font-size:1.6em;margin-bottom:0}h2{border-bottom:2px solid #e3e7ef;padding-bottom:4px;margin-top:32px}
.sub{color:#5b6478;margin-top:4px}
table{border-collapse:collapse;margin:10px 0;font-size:13px;width:100%}
th,td{border:1px solid #d8dde8;padding:4px 7px;text-align:left;vertical-align:top}
th{background:#f2f4f8}tr:nth-child(even) td{background:#fafbfd}
.warn{background:#fff4e0;border-left:5px solid #f0a020;padding:8px 12px;margin:6px 0}
.ok{color:#1f7a36;font-weight:600}.bad{color:#b42318;font-weight:600}.skip{color:#8a6100}
img.plot{max-width:100%;border:1px solid #e3e7ef;margin:8px 0}
code{background:#f2f4f8;padding:1px 4px;border-radius:3px}
details{margin:6px 0}summary{cursor:pointer;color:#3b4a6b}
"""


def _inline(text: str) -> str:
    """HTML-escape, then render **bold** the way the Markdown does."""
    import re

    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(str(text)))


def _html_cell(text: str) -> str:
    cls = {"done": "ok", "pass": "ok", "available": "ok", "FAIL": "bad", "failed": "bad", "skipped": "skip"}
    word = str(text).split(" ")[0].rstrip(":")
    return f'<td class="{cls[word]}">{_inline(text)}</td>' if word in cls else f"<td>{_inline(text)}</td>"


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "<p>(none)</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(results: dict[str, Any], plots: dict[str, bytes] | None = None) -> str:
    """A self-contained HTML report; ``plots`` maps plot name to PNG bytes (embedded as base64)."""
    recipe = results["recipe"]
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>segdeploy run — {html.escape(recipe['name'])}</title>", f"<style>{_CSS}</style></head><body>",
             f"<h1>segdeploy run — {html.escape(recipe['name'])}</h1>",
             f'<p class="sub">{html.escape(recipe["title"])} — generated {html.escape(results["updated_utc"])} '
             f"from results.json ({html.escape(results['schema'])})</p>"]
    for anchor, title, paras, rows, after in _sections(results):
        parts.append(f'<section id="{anchor}"><h2>{html.escape(title)}</h2>')
        for para in paras:
            parts.append(f'<div class="warn">{_inline(para)}</div>' if anchor == "warnings" and results["warnings"]
                         else f"<p>{_inline(para)}</p>")
        if anchor == "throughput" and plots:
            for name in ("throughput", "published"):
                if name in plots:
                    data = base64.b64encode(plots[name]).decode("ascii")
                    parts.append(f'<img class="plot" id="plot-{name}" alt="{name} plot" '
                                 f'src="data:image/png;base64,{data}">')
        if rows:
            body, folded = rows[1:], []
            if anchor == "published":
                # Rows this run could not measure (other batch sizes, other datasets) go in a fold.
                measured_col = rows[0].index("measured")
                folded = [r for r in body if r[measured_col] == "—"]
                body = [r for r in body if r[measured_col] != "—"]
            parts.append(_html_table(rows[0], body))
            if folded:
                parts.append(f"<details><summary>{len(folded)} more published row(s) not measured by this run"
                             f"</summary>{_html_table(rows[0], folded)}</details>")
        if after:
            parts.append("<ul>" + "".join(f"<li>{_inline(a)}</li>" for a in after) + "</ul>")
        parts.append("</section>")
    if recipe.get("notes"):
        parts.append('<section id="notes"><h2>Recipe notes</h2><ul>'
                     + "".join(f"<li>{html.escape(n)}</li>" for n in recipe["notes"]) + "</ul></section>")
    parts.append("</body></html>")
    return "\n".join(parts)


#: Section anchors every HTML report has (and titles every Markdown report has).
SECTIONS = (("summary", "Summary"), ("warnings", "Read this first"), ("published", "Published vs measured"),
            ("fidelity", "Fidelity against PyTorch fp32"), ("accuracy", "Accuracy"),
            ("throughput", "Throughput and latency"), ("environment", "Environment"))


def write_reports(run_dir: str | os.PathLike, results: dict[str, Any]) -> dict[str, Path]:
    """Render ``results`` into ``run_dir``: plots/*.png, report.md, report.html. Returns the paths."""
    from segdeploy.engine.writers import atomic_write_text

    run_dir = Path(run_dir)
    plot_paths = make_plots(results, run_dir / "plots")
    rel = {name: path.relative_to(run_dir).as_posix() for name, path in plot_paths.items()}
    data = {name: path.read_bytes() for name, path in plot_paths.items()}
    files = {"report.md": atomic_write_text(run_dir / "report.md", render_markdown(results, rel)),
             "report.html": atomic_write_text(run_dir / "report.html", render_html(results, data))}
    files.update({f"plots/{p.name}": p for p in plot_paths.values()})
    return files
