"""The timed probe behind ``--backend auto`` (see :mod:`segdeploy.backends.auto` for the rules)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from segdeploy.backends.auto import (
    CALIB_IMAGES,
    GATE_IMAGES,
    bundled_photos,
    judged_description,
    PROBE_SECONDS,
    AutoChoice,
    Candidate,
    ProbeRow,
    _gate_size,
    cache_path_for,
    candidates_for,
    generated_images,
    probe_key,
    probing_enabled,
    static_choice,
)
from segdeploy.backends.base import ArtifactOptions, RuntimeUnavailable
from segdeploy.engine.fidelity import fidelity_gate
from segdeploy.engine.inference_threads import calls_in_flight

#: seeds of the generated gate and calibration images (different: the sets are disjoint)
GATE_SEED, CALIB_SEED = 1009, 2003


def _weights_id(module) -> str:
    from segdeploy.convert.fingerprints import state_dict_digest

    record = getattr(module, "segdeploy_weights", None)
    info = record.to_dict() if record is not None else {}
    if info.get("sha256"):
        return f"sha256:{info['sha256']}"
    if info.get("kind") == "random":
        return f"random:{info.get('seed')}"
    return f"state_dict:{state_dict_digest(module)}"


def _timing_shape(spec) -> tuple[int, int, int, int]:
    """Batch-1 input shape timed: the model's input size, native-size models scaled to ≤ 512 px."""
    h, w = spec.input_size
    if spec.preprocess.size is None and max(h, w) > 512:
        f = 512 / max(h, w)
        m = max(1, spec.preprocess.multiple_of)
        h, w = max(m, int(h * f) // m * m), max(m, int(w * f) // m * m)
    return (1, 3, int(h), int(w))


def time_runtime(runtime, shape: tuple[int, ...], seconds: float = PROBE_SECONDS, min_calls: int = 3) -> float:
    """images/s of ``runtime.run`` at ``shape``: batch / median latency of ≥ ``min_calls`` calls
    over ≥ ``seconds`` (one untimed warm-up call first; outputs limited to what decoding reads).

    A runtime that takes N calls at once (``concurrent_calls``, OpenVINO streams) is timed as the
    pipeline runs it: N threads calling together, images/s = calls x batch / wall time.
    """
    from segdeploy.backends.base import decode_outputs

    outputs = decode_outputs(runtime.spec)
    x = np.random.default_rng(7).standard_normal(shape, dtype=np.float32)
    runtime.run(x, outputs=outputs)
    calls = calls_in_flight(runtime)
    if calls > 1:
        return _time_concurrent(runtime, x, outputs, calls, seconds, min_calls)
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < min_calls or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        runtime.run(x, outputs=outputs)
        samples.append(time.perf_counter() - t0)
        if len(samples) >= 50:
            break
    return shape[0] / float(np.median(samples))


def _time_concurrent(runtime, x: np.ndarray, outputs, calls: int, seconds: float, min_calls: int) -> float:
    import threading

    for _ in range(calls):  # each infer request warmed once
        runtime.run(x, outputs=outputs)
    done = [0] * calls
    start = time.perf_counter()

    def loop(i: int) -> None:
        while done[i] < min_calls or (time.perf_counter() - start < seconds and done[i] < 50):
            runtime.run(x, outputs=outputs)
            done[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) * x.shape[0] / (time.perf_counter() - start)


#: NNCF mixed-precision ladder: how many of the last convolutions (execution order) stay float
#: when the fully quantized model fails its gate. U²-Net's last 7 are its side and fuse
#: convolutions, which produce the logits; a UNet's last one is its 1x1 classifier.
NNCF_LADDER = (0, 1, 7)


def gated_nncf(module, spec, calib: list[np.ndarray], batches: list[np.ndarray], reference, sizes, *,
               seed: int = 0, ladder: tuple[int, ...] = NNCF_LADDER, int8_rest: str | None = None):
    """OpenVINO int8 through NNCF with a mixed-precision fallback: quantize with the first rung of
    ``ladder`` (number of last convolutions kept float); if the fidelity gate fails, go up the
    ladder. Returns (runtime or None, rung, passed, measures, reason) of the first passing rung,
    else of the last one tried."""
    from segdeploy.backends import open_configured as _open
    from segdeploy.convert.nncf_quantize import cached_nncf_quantize

    from segdeploy.backends.auto import auto_options

    result = (None, None, False, {}, "no rung tried")
    options = {**auto_options("openvino"), **({"int8_rest": int8_rest} if int8_rest else {})}
    for rung in ladder:
        xml = cached_nncf_quantize(module, None, calib, seed=seed, spec=spec, ignore_last=rung)
        runtime = _open(module, "openvino", "cpu", "int8", None, xml, seed=seed, **options)
        passed, measures, reason = fidelity_gate(spec, "int8", reference, _run_images(runtime, batches), sizes)
        measures = {**measures, "float_last_convs": float(rung)}
        result = (runtime, rung, passed, measures, reason)
        if passed:
            break
    return result


def _open_candidate(candidate: Candidate, module, spec, calib: list[np.ndarray], seed: int):
    from segdeploy.backends import open_configured as _open
    from segdeploy.backends.auto import auto_options

    onnx_path = None
    if candidate.quantizer == "packaged":
        from segdeploy.backends.auto_quick import packaged_int8

        xml = packaged_int8(spec, _weights_id(module))
        if xml is None:
            raise RuntimeUnavailable("segdeploy ships no int8 model for these weights")
        return _open(module, "openvino", "cpu", "int8", None, str(xml), seed=seed, **auto_options("openvino"))
    if candidate.quantizer == "ort-qdq" and candidate.backend == "openvino":
        # OpenVINO int8 from calibration images would be NNCF's (its own candidate): this one runs
        # ONNX Runtime's QDQ file, as its label says.
        from segdeploy.convert.quantize import cached_quantize

        onnx_path = cached_quantize(module, None, calib, num_calib=len(calib), seed=seed, spec=spec)
    int8_from_images = candidate.precision == "int8" and onnx_path is None
    return _open(module, candidate.backend, "cpu", candidate.precision, None, onnx_path, seed=seed, spec=None,
                 artifact=ArtifactOptions(calib=calib, num_calib=len(calib)) if int8_from_images else None,
                 **auto_options(candidate.backend))


def _run_images(runtime, batches: list[np.ndarray]) -> list[list[np.ndarray]]:
    out = []
    for x in batches:
        outputs = runtime.run(x)
        out.append([np.asarray(o[0]) for o in outputs])
    return out


def probe(module, spec, device: str = "cpu", precision: str | None = None, *, seed: int = 0,
          progress: Callable[[str], None] | None = None) -> list[ProbeRow]:
    """Gate and time every candidate; the reference is PyTorch fp32 on ``module``."""
    from segdeploy.backends import open_configured as _open
    from segdeploy.engine.transforms import preprocess_with_valid

    say = progress or (lambda message: None)
    h, w = _gate_size(spec)
    images = generated_images(GATE_IMAGES, h, w, GATE_SEED)
    if not _weights_id(module).startswith("random:"):
        # Trained weights: real photos too (random weights' maps mean nothing on them).
        images += bundled_photos(h, w)
    calib = generated_images(CALIB_IMAGES, h, w, CALIB_SEED)
    batches, sizes = [], []
    for image in images:
        chw, _ = preprocess_with_valid(image, spec)
        batches.append(chw[None])
        sizes.append(image.shape[:2])
    cuda = str(device).startswith("cuda")
    shape = _timing_shape(spec)
    if cuda:
        from segdeploy.backends.auto_cuda import timing_shape

        shape = timing_shape(spec, shape)
    reference_rt = _open(module, "torch", device, "fp32", None, None, seed=seed)
    say(f"auto: reference PyTorch fp32 on {judged_description(len(images))}")
    reference = _run_images(reference_rt, batches)
    rows: list[ProbeRow] = []
    todo = candidates_for(device, precision)
    for number, candidate in enumerate(todo, 1):
        t0 = time.perf_counter()
        row = ProbeRow(candidate.backend, candidate.precision, candidate.quantizer, "error", judged=len(images))
        try:
            if candidate.backend == "torch" and candidate.precision == "fp32":
                runtime = reference_rt
                row.status, row.reason = "pass", "the reference"
            elif cuda and candidate.precision == "bf16" and any(
                    r.precision == "fp16" and r.status == "pass" for r in rows):
                # Same tensor-core rate as fp16 with 8x its rounding: not worth a second compile.
                row.status, row.reason = "unavailable", "not tried: fp16 passed, and bf16 runs no faster on CUDA"
                rows.append(row)
                continue
            else:
                say(f"auto: [{number}/{len(todo)}] trying {candidate.label}")
                if candidate.quantizer == "nncf":
                    runtime, _, passed, measures, reason = gated_nncf(module, spec, calib, batches, reference, sizes,
                                                                      seed=seed)
                else:
                    if cuda:
                        from segdeploy.backends.auto import auto_options

                        runtime = _open(module, candidate.backend, device, candidate.precision, None, None, seed=seed,
                                        **auto_options(candidate.backend, device, spec=spec,
                                                       precision=candidate.precision))
                    else:
                        runtime = _open_candidate(candidate, module, spec, calib, seed)
                    passed, measures, reason = fidelity_gate(spec, candidate.precision, reference,
                                                             _run_images(runtime, batches), sizes)
                row.status, row.measures, row.reason = ("pass" if passed else "fail"), measures, reason
                row.artifact = getattr(runtime, "onnx_path", None) or getattr(runtime, "artifact", None)
            row.images_per_s = round(time_runtime(runtime, shape), 3)
        except RuntimeUnavailable as exc:
            row.status, row.reason = "unavailable", str(exc)
        except Exception as exc:  # noqa: BLE001 - a candidate that breaks is reported, never chosen
            row.status, row.reason = "error", f"{type(exc).__name__}: {str(exc)[:300]}"
        row.seconds = round(time.perf_counter() - t0, 2)
        say(f"auto: [{number}/{len(todo)}] {row.label}: {row.status}"
            + (f", {row.images_per_s:.2f} images/s" if row.images_per_s else "")
            + (f" ({row.reason.split('; ')[0][:160]})" if row.reason and row.status != "pass" else ""))
        rows.append(row)
    return rows


def decide(rows: list[ProbeRow]) -> ProbeRow:
    """The fastest row that passed its gate (ValueError when none did)."""
    passed = [r for r in rows if r.status == "pass" and r.images_per_s]
    if not passed:
        raise ValueError("no candidate passed its fidelity gate")
    return max(passed, key=lambda r: r.images_per_s)


def explain(best: ProbeRow, rows: list[ProbeRow]) -> str:
    failed = [r.label for r in rows if r.status == "fail"]
    text = (f"{best.label}: {best.images_per_s:.2f} images/s, the fastest of {sum(r.status == 'pass' for r in rows)} "
            f"configuration(s) whose fidelity gate passed against PyTorch fp32 on {judged_description(best.judged)}")
    if failed:
        # one line: the details are in the table (`segdeploy auto MODEL`, `bench --backend auto`)
        text += f"; gate failed: {', '.join(failed)} (`segdeploy auto` shows why)"
    return text


def choose_auto(module, spec, device: str = "cpu", precision: str | None = None, *, seed: int = 0,
                refresh: bool = False, progress: Callable[[str], None] | None = None,
                full: bool = False) -> AutoChoice:
    """The cached choice for ``module`` (built by create_model) on this machine; static when off.

    On a miss (or a cached file that does not verify, which is said): on the CPU the quick choice
    of :mod:`segdeploy.backends.auto_quick` (seconds), unless ``full`` asks for the timed probe
    of every candidate; on CUDA the probe (no calibration there). ``full`` also replaces a cached
    quick choice. Either is cached with its digests (:mod:`segdeploy.backends.auto_cache`).
    """
    from segdeploy.backends.auto_cache import load_choice, save_choice

    if not probing_enabled():
        return static_choice(device, precision)
    say = progress or (lambda message: None)
    weights_id = _weights_id(module)
    key = probe_key(spec, weights_id, device, precision)
    path = cache_path_for(key)
    if not refresh:
        cached, problem = load_choice(path, key)
        if cached is not None and (not full or cached.made_by == "probe"):
            cached.source = "cache"
            return cached
        if problem:
            say(f"auto: the cached choice {path.name} does not verify ({problem}); choosing again")
    if not full and not str(device).startswith("cuda"):
        from segdeploy.backends.auto_quick import quick_choice

        choice = quick_choice(module, spec, device, precision, weights_id, seed=seed, say=say)
    else:
        rows = probe(module, spec, device, precision, seed=seed, progress=progress)
        try:
            best = decide(rows)
        except ValueError:
            fallback = static_choice(device, precision)
            fallback.table, fallback.why = rows, "no probed configuration passed; " + fallback.why
            return fallback
        choice = AutoChoice(best.backend, best.precision, explain(best, rows), "probe", quantizer=best.quantizer,
                            artifact=best.artifact if best.precision == "int8" else None, table=rows,
                            made_by="probe")
    choice.key, choice.cache_path = key, str(path)
    save_choice(choice, path)
    return choice


def record_fallback(choice: AutoChoice, backend: str, precision: str, why: str) -> AutoChoice:
    """Replace a cached choice that could not be opened (e.g. an export whose parity check failed)
    by ``backend`` ``precision``, so that later runs do not try it again."""
    from segdeploy.backends.auto_cache import save_choice

    new = AutoChoice(backend, precision, why, choice.source, table=choice.table, key=choice.key,
                     cache_path=choice.cache_path, made_by=choice.made_by)
    if choice.cache_path and choice.key:
        save_choice(new, Path(choice.cache_path))
    return new


def table_lines(choice: AutoChoice) -> list[str]:
    """Plain-text table of a choice (printed by ``segdeploy bench --backend auto``)."""
    lines = [f"{'configuration':32s} {'status':12s} {'images/s':>9s}  measures / reason"]
    for r in sorted(choice.table, key=lambda r: -(r.images_per_s or 0)):
        measures = ", ".join(f"{k} {v:.4g}" for k, v in r.measures.items())
        detail = "; ".join(x for x in (measures, r.reason if r.status != "pass" or r.reason == "the reference" else "")
                           if x)
        ips = f"{r.images_per_s:9.2f}" if r.images_per_s else f"{'—':>9s}"
        mark = " ← chosen" if (r.backend, r.precision, r.quantizer) == (choice.backend, choice.precision,
                                                                         choice.quantizer) else ""
        lines.append(f"{r.label:32s} {r.status:12s} {ips}  {detail}{mark}")
    return lines


def describe_choice(choice: AutoChoice) -> dict[str, Any]:
    """The dict kept on ``runtime.selection``."""
    return {"requested": "auto", "backend": choice.backend, "precision": choice.precision,
            "quantizer": choice.quantizer, "why": choice.why, "source": choice.source,
            "made_by": choice.made_by, "cache": choice.cache_path, "digest": choice.digest,
            "table": [{"configuration": r.label, "status": r.status, "images_per_s": r.images_per_s,
                       "measures": r.measures, "reason": r.reason} for r in choice.table]}
