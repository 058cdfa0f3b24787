#!/usr/bin/env python3
"""CPU comparison: segdeploy's default and int8 paths against what a user gets without it.

For u2netp (320²), unetpp_dsb2018 (96²) and unet_carvana (512²), in one process on this machine:

* ``ort``        plain ONNX Runtime fp32 (torch.onnx.export opset 17, ORT_ENABLE_ALL, CPU provider);
* ``openvino``   OpenVINO with its CPU defaults (it picks its own inference precision, bf16 on
                 CPUs with AMX/AVX-512-bf16) and the LATENCY hint, compiled per batch shape;
* ``segdeploy``  what ``segdeploy predict`` runs by default: the ``--backend auto`` choice (probed on
                 generated images, cached), with auto's options (OpenVINO: one stream per core);
* ``ovfp32``     segdeploy's OpenVINO fp32 with auto's options;
* ``int8``       segdeploy's ONNX Runtime QDQ int8 file run by OpenVINO;
* ``nncf``       segdeploy's OpenVINO int8 through NNCF, with the mixed-precision ladder (the last
                 0 / 1 / 7 convolutions kept float until the gate passes on generated images);
* ``torch``      (with ``--with-torch``) plain PyTorch eager fp32.

Fidelity (``--gate``, default on): every segdeploy variant is judged against fp32 (OpenVINO fp32
of the same ONNX, equal to PyTorch fp32 within 1e-5, used because PyTorch is several times slower
on these shared cores) on 16 real photos (scikit-image's samples and their mirror images) that are
disjoint from the calibration photos, with ``segdeploy.backends.auto.fidelity_gate``.
u2netp uses the TRAINED weights (the package's official U²-Netp, ``--weights official``) for every
variant, peers included; the other models random weights (no trained checkpoint is reachable here).

Variants are timed in interleaved rounds (``--repeats``), median and min–max images/s over rounds
are reported; PERFORMANCE.md §4 numbers are shown beside them. Random weights (speed does not
depend on weight values, except u2netp, see above). Load average is recorded before and after
each model. Writes ``benchmarks/results/cpu_<date>.json`` and ``.md``.

Run it on an otherwise idle machine: ``python benchmarks/cpu_compare.py``. Prove it works in a
few seconds with ``--quick --out-dir /tmp/x``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from _common import (
    RESULTS,
    calibration_photos,
    judge_photos,
    load_average,
    OpenVinoDefault,
    PlainOnnxRuntime,
    TorchEager,
    Variant,
    export_plain_onnx,
    fmt_rate,
    run_variants,
    scratch_dir,
    segdeploy_runtime,
    summarise,
    write_results,
)

# model -> input size and batch sizes of PERFORMANCE.md §4
MODELS = {
    "u2netp": {"input_size": (320, 320), "batch_sizes": [1, 8]},
    "unetpp_dsb2018": {"input_size": (96, 96), "batch_sizes": [1, 16]},
    "unet_carvana": {"input_size": (512, 512), "batch_sizes": [1]},
}

# PERFORMANCE.md §4, images/s on a 2-core AMD EPYC: (model, batch) -> {column: value}
PUBLISHED = {
    ("u2netp", 1): {"torch": 2.60, "ort": 1.99, "openvino": 3.24},
    ("u2netp", 8): {"torch": 1.86, "ort": 4.56, "openvino": 8.18},
    ("unet_carvana", 1): {"torch": 0.38, "ort": 0.56, "openvino": 1.18},
    ("unetpp_dsb2018", 1): {"torch": 14.6, "ort": 20.1, "openvino": 39.1},
    ("unetpp_dsb2018", 16): {"torch": 14.6, "ort": 22.2, "openvino": 43.4},
}
PEERS = ("ort", "openvino")  # the "best peer": plain ORT fp32, OpenVINO defaults


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    parser.add_argument("--batch-sizes", default=None, help="override every model's batch sizes, e.g. 1,4")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per batch size and round (default 3)")
    loop = parser.add_mutually_exclusive_group()
    loop.add_argument("--iters", type=int, default=None, help="timed calls per batch size and round")
    loop.add_argument("--duration", type=float, default=None,
                      help="seconds of timed calls per batch size and round (default 15)")
    parser.add_argument("--with-torch", action="store_true", help="also time plain PyTorch eager fp32")
    parser.add_argument("--skip", default="",
                        help="comma-separated variants to leave out (ort,openvino,segdeploy,int8,nncf)")
    parser.add_argument("--no-gate", dest="gate", action="store_false", help="skip the fidelity judgement")
    parser.add_argument("--random-u2netp", action="store_true", help="random weights for u2netp too")
    parser.add_argument("--quick", action="store_true",
                        help="prove the script works: batch 1, 1 round, no warm-up, 1 timed call (numbers are noise)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help=f"where results go (default {RESULTS})")
    parser.add_argument("--tag", default=None, help="suffix of the result file names")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.iters, args.duration = 1, 0, 1, None
        args.batch_sizes = args.batch_sizes or "1"
        args.tag = args.tag or "quick"
    elif args.iters is None and args.duration is None:
        args.duration = 15.0
    return args


def calibration_images(n: int = 16) -> list:
    """Real photos to calibrate int8 on (disjoint from the judging photos); generated ones when
    scikit-image is missing."""
    photos = calibration_photos()[:n]
    if photos:
        return photos
    from segdeploy.recipes.demo import render_sample

    return [render_sample(i, seed=1).image for i in range(n)]


def weights_for(model: str, args) -> str:
    if model == "u2netp" and not args.random_u2netp:
        return "official"  # the packaged trained weights (src/segdeploy/assets/weights)
    return "random"


class NncfVariant:
    """Opens segdeploy's NNCF int8 with the mixed-precision ladder; remembers the rung it took."""

    def __init__(self, model: str, weights: str):
        self.model, self.weights = model, weights
        self.info: dict = {}

    def __call__(self):
        from segdeploy.backends import open_runtime
        from segdeploy.backends.auto import GATE_IMAGES, _gate_size, generated_images
        from segdeploy.backends.auto_probe import GATE_SEED, gated_nncf
        from segdeploy.core.registry import get_spec
        from segdeploy.engine.transforms import preprocess
        from segdeploy.zoo import create_model

        spec = get_spec(self.model)
        module = create_model(spec, self.weights)
        h, w = _gate_size(spec)
        images = generated_images(GATE_IMAGES, h, w, GATE_SEED)
        batches = [preprocess(im, spec)[None] for im in images]
        fp32 = open_runtime(module, "openvino", precision="fp32")
        reference = [[o[0] for o in fp32.run(x)] for x in batches]
        runtime, rung, passed, measures, reason = gated_nncf(
            module, spec, calibration_images(), batches, reference, [im.shape[:2] for im in images])
        self.info = {"float_last_convs": rung, "ladder_gate_passed": passed, "ladder_measures": measures,
                     "ladder_reason": reason}
        return runtime


def auto_options(backend: str) -> dict:
    """The options ``--backend auto`` opens ``backend`` with (OpenVINO: one stream per core)."""
    from segdeploy.backends.auto import auto_options as chosen

    return chosen(backend)


def auto_runtime(model: str, weights: str):
    """What ``segdeploy predict`` runs by default: the probed auto choice (cached per model, weights,
    machine and library versions), opened with auto's options."""
    from segdeploy.backends import open_runtime

    return open_runtime(model, "auto", weights=weights)


def qdq_on_openvino(model: str, weights: str):
    """segdeploy's ONNX Runtime QDQ int8 file (spec.int8_float_layers kept float) run by OpenVINO."""
    from segdeploy.backends import open_runtime
    from segdeploy.convert.quantize import cached_quantize

    qdq = cached_quantize(model, weights, calibration_images(), num_calib=16)
    return open_runtime(model, "openvino", precision="int8", onnx_path=qdq, weights=weights,
                        **auto_options("openvino"))


def variants_for(model: str, onnx_path: Path, args) -> list[Variant]:
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    weights = weights_for(model, args)
    out = []
    if args.with_torch:
        out.append(Variant("torch", "PyTorch eager fp32", lambda: TorchEager(model, "cpu", "fp32", weights=weights)))
    out.append(Variant("ort", "ONNX Runtime fp32 (plain)", lambda: PlainOnnxRuntime(onnx_path)))
    out.append(Variant("openvino", "OpenVINO CPU defaults (latency)", lambda: OpenVinoDefault(onnx_path)))
    out.append(Variant("segdeploy", "segdeploy default (--backend auto)", lambda: auto_runtime(model, weights)))
    out.append(Variant("ovfp32", "segdeploy OpenVINO fp32 (streams)",
                       lambda: segdeploy_runtime(model, "cpu", precision="fp32", backend="openvino", weights=weights,
                                                 **auto_options("openvino"))))
    out.append(Variant("int8", "segdeploy int8 ORT-QDQ on OpenVINO (16 calibration photos)",
                       lambda: qdq_on_openvino(model, weights)))
    nncf = NncfVariant(model, weights)
    variant = Variant("nncf", "segdeploy int8 NNCF on OpenVINO (16 calibration photos, gated ladder)", nncf)
    variant.nncf = nncf
    out.append(variant)
    return [v for v in out if v.key not in skip]


def judge(model: str, variants: list[Variant], onnx_path: Path, weights: str) -> dict:
    """Fidelity of every segdeploy variant vs fp32 on the judging photos (see module doc)."""
    from segdeploy.backends import open_runtime
    from segdeploy.engine.fidelity import fidelity_gate
    from segdeploy.core.registry import get_spec
    from segdeploy.engine.transforms import preprocess_with_valid

    spec = get_spec(model)
    photos = judge_photos() or calibration_images()[:4]
    batches = [preprocess_with_valid(p, spec)[0][None] for p in photos]
    sizes = [p.shape[:2] for p in photos]
    # segdeploy's own export (dynamic height/width: photos keep their aspect), same weights
    fp32 = open_runtime(model, "openvino", precision="fp32", weights=weights)
    reference = [[o[0] for o in fp32.run(x)] for x in batches]
    out = {}
    for v in variants:
        if v.key in ("ort", "openvino", "torch") or v.runtime is None:
            continue
        precision = str(v.runtime.describe().get("precision", "fp32"))
        try:
            outputs = [[o[0] for o in v.runtime.run(x)] for x in batches]
            passed, measures, reason = fidelity_gate(spec, precision, reference, outputs, sizes)
            out[v.key] = {"passed": passed, "precision": precision, "measures": measures, "reason": reason,
                          "images": len(photos)}
        except Exception as exc:  # noqa: BLE001 - recorded
            out[v.key] = {"passed": False, "reason": f"{type(exc).__name__}: {exc}"}
    return out


def auto_check(payload: dict) -> list[str]:
    """Does ``--backend auto`` run the fastest configuration that passes the gate? Per model at the
    smallest batch: auto's rate beside the fastest gate-passing segdeploy variant's."""
    keys = payload["variant_labels"]
    lines = ["", "## Does `--backend auto` pick the fastest configuration that passes the gate?", "",
             "| model | auto chose | auto images/s | fastest passing variant | its images/s | auto / fastest | verdict |",
             "|---|---|---:|---|---:|---:|---|"]
    for model in payload["models"]:
        rows = [r for r in payload["summary"] if r["model"] == model and "batch_size" in r]
        if not rows:
            continue
        bs = min(r["batch_size"] for r in rows)
        at = {r["variant"]: r["images_per_s_median"] for r in rows if r["batch_size"] == bs}
        gate = (payload.get("fidelity") or {}).get(model, {})
        passing = {k: v for k, v in at.items() if k not in PEERS + ("segdeploy", "torch") and gate.get(k, {}).get("passed")}
        if "segdeploy" not in at or not passing:
            continue
        best = max(passing, key=passing.get)
        share = at["segdeploy"] / passing[best]
        chose = (payload.get("auto_choice") or {}).get(model, "?")
        auto_passed = gate.get("segdeploy", {}).get("passed")
        verdict = ("yes" if share >= 0.9 else "NO") if auto_passed else "NO: auto's own choice fails the gate here"
        lines.append(f"| {model} | {chose} | {at['segdeploy']:.2f} | {keys.get(best, best)} | {passing[best]:.2f} | "
                     f"{share:.2f} | {verdict} |")
    lines += ["", "'yes' = auto's choice passes the gate here and its rate is within 10 % of the fastest "
              "gate-passing variant (the run-to-run spread on 2 cores). auto judges on 16 generated images (plus "
              "the packaged photos for trained weights); this table judges scikit-image's photos."]
    return lines


def markdown(payload: dict) -> str:
    env = payload["environment"]
    lines = [
        f"# CPU comparison — {payload['date']}",
        "",
        f"- machine: {env.get('cpu')} ({env.get('cpu_count')} logical CPUs), {env.get('platform')}",
        f"- packages: {', '.join(f'{k} {v}' for k, v in (env.get('packages') or {}).items() if v)}",
        f"- settings: {payload['settings']}",
        "- cells: median images/s over the rounds (min–max in brackets = run-to-run spread); "
        "a difference inside the spread is noise. Pure inference on random input, random weights.",
        "- 'vs best peer' = segdeploy ÷ the faster of plain ONNX Runtime fp32 and OpenVINO defaults in this run "
        "(target ≥ 1.0 for the default path, ≥ 1.5 for int8, PERFORMANCE.md §5).",
        "",
    ]
    keys = payload["variant_labels"]
    head = ["model", "input", "batch"] + [keys[k] for k in keys] + ["§4 best (published)", "default vs best peer",
                                                                     "int8 (QDQ) vs best peer", "int8 (NNCF) vs best peer"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * 3 + "---:|" * (len(head) - 3))
    for model, cfg in payload["models"].items():
        rows = [r for r in payload["summary"] if r["model"] == model and "batch_size" in r]
        for bs in sorted({r["batch_size"] for r in rows}):
            at = {r["variant"]: r for r in rows if r["batch_size"] == bs}
            peer_best = max((at[k]["images_per_s_median"] for k in PEERS if k in at), default=None)
            published = PUBLISHED.get((model, bs))
            pub = f"{max(published.values()):.2f}" if published else "—"

            def ratio(key):
                if key not in at or not peer_best:
                    return "—"
                return f"{at[key]['images_per_s_median'] / peer_best:.2f}×"

            cells = [model, "x".join(map(str, cfg["input_size"])), str(bs)]
            cells += [fmt_rate(at.get(k)) for k in keys] + [pub, ratio("segdeploy"), ratio("int8"), ratio("nncf")]
            lines.append("| " + " | ".join(cells) + " |")
    lines += auto_check(payload)
    if payload.get("fidelity"):
        lines += ["", "## Fidelity gate (segdeploy variants vs fp32 on judging photos, disjoint from calibration)", "",
                  "| model | weights | variant | precision | passed | measures | reason |", "|---|---|---|---|---|---|---|"]
        for model, rows in payload["fidelity"].items():
            w = payload["settings"]["weights"].get(model, "random")
            w = "trained (official)" if w != "random" else "random"
            for key, g in rows.items():
                measures = ", ".join(f"{k} {v:.4g}" for k, v in (g.get("measures") or {}).items())
                lines.append(f"| {model} | {w} | {keys.get(key, key)} | {g.get('precision')} | "
                             f"{'**pass**' if g.get('passed') else '**FAIL**'} | {measures} | {g.get('reason') or ''} |")
    if payload.get("nncf_ladder"):
        lines += ["", "## NNCF mixed-precision ladder (chosen on generated images before judging)", ""]
        for model, info in payload["nncf_ladder"].items():
            lines.append(f"- {model}: last {info.get('float_last_convs')} convolution(s) kept float; gate on "
                         f"generated images passed: {info.get('ladder_gate_passed')} {info.get('ladder_measures')}")
    if payload.get("load_average"):
        lines += ["", "## Load average (1/5/15 min) before → after each model (2 shared CPUs)", ""]
        for model, load in payload["load_average"].items():
            lines.append(f"- {model}: {load['before']} → {load['after']}"
                         + (" — **under contention**: other processes took CPU from every variant alike "
                            "(rounds are interleaved), absolute numbers are low" if load["contended"] else ""))
    errors = [r for r in payload["summary"] if r.get("error")]
    if errors:
        lines += ["", "## Variants that did not run (or stopped)", ""]
        lines += [f"- {r['model']} / {r['label']}: {r['error']}" for r in errors]
    lines += ["", "## Runtimes as they described themselves", ""]
    for item in payload["runtimes"]:
        lines.append(f"- {item['model']} / {item['label']}: {item['describe']}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from segdeploy.core.environment import environment

    args = parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        print(f"unknown model(s) {unknown}; choose from {list(MODELS)}", file=sys.stderr)
        return 2
    reports, summary, runtimes, labels = [], [], [], {}
    loads, gates, nncf_info, weights_used, auto_choice = {}, {}, {}, {}, {}
    with scratch_dir() as tmp:
        for model in models:
            cfg = MODELS[model]
            batch_sizes = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else cfg["batch_sizes"]
            print(f"[{model}] exporting plain ONNX at {cfg['input_size']}", flush=True)
            weights = weights_for(model, args)
            onnx_path = export_plain_onnx(model, cfg["input_size"], Path(tmp), weights=weights)
            variants = variants_for(model, onnx_path, args)
            labels.update({v.key: v.label for v in variants})
            before = load_average()
            run_variants(model, variants, batch_sizes=batch_sizes, input_size=cfg["input_size"],
                         repeats=args.repeats, warmup=args.warmup, iters=args.iters, duration=args.duration,
                         log=lambda m: print(m, flush=True))
            after = load_average()
            loads[model] = {"before": before, "after": after,
                            "contended": max(before[0], after[0]) > (os.cpu_count() or 1)}
            summary += summarise(model, variants)
            weights_used[model] = weights
            for v in variants:
                if getattr(v, "nncf", None) is not None:
                    nncf_info[model] = v.nncf.info
                if v.key == "segdeploy" and v.runtime is not None:
                    sel = getattr(v.runtime, "selection", None) or {}
                    auto_choice[model] = (f"{sel.get('backend')} {sel.get('precision')}"
                                          + (f" ({sel['quantizer']})" if sel.get("quantizer") else "")
                                          + (f", {sel['options']}" if sel.get("options") else ""))
            if args.gate:
                print(f"[{model}] judging fidelity on photos", flush=True)
                gates[model] = judge(model, variants, onnx_path, weights)
            for v in variants:
                reports += [dict(variant=v.key, round=i, **r.to_dict()) for i, r in enumerate(v.reports)]
                if v.reports:
                    runtimes.append({"model": model, "label": v.label, "describe": v.reports[0].runtime})
                v.runtime = None  # free the sessions before the next model
    from datetime import date

    payload = {
        "kind": "cpu_compare",
        "date": date.today().isoformat(),
        "environment": environment(),
        "settings": {"repeats": args.repeats, "warmup": args.warmup, "iters": args.iters,
                     "duration_s": args.duration, "quick": args.quick, "weights": weights_used},
        "load_average": loads,
        "fidelity": gates,
        "nncf_ladder": nncf_info,
        "auto_choice": auto_choice,
        "models": {m: MODELS[m] for m in models},
        "variant_labels": labels,
        "published_section4": {f"{m}@{b}": v for (m, b), v in PUBLISHED.items()},
        "summary": summary,
        "runtimes": runtimes,
        "reports": reports,
    }
    json_path, md_path = write_results("cpu", payload, markdown(payload), args.out_dir, args.tag)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
