"""The measurements of ``gpu_check.py``, one function per section; each returns a JSON-able dict.

Every section runs in its own process (started by gpu_check.py with a timeout), so a hung compile
or a CUDA error in one section cannot take the others' results with it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: per model: input size, the batch sizes the peers are timed at (the best one is reported), the
#: weights judged, the JPEG size and count of the end-to-end run
MODELS = {
    "u2netp": {"batches": [32, 64, 128], "compile_batches": [64], "weights": None, "share": 0.5, "photo_hw": (480, 640), "photos": 2048},
    "unet_carvana": {"batches": [8, 16], "compile_batches": [8], "weights": "random", "share": 0.2, "photo_hw": (640, 959), "photos": 256},
    "unetpp_dsb2018": {"batches": [64, 256], "compile_batches": [64], "weights": "random", "share": 0.3, "photo_hw": (256, 320), "photos": 2048},
}
DRY = {"u2netp": {"batches": [1, 2], "photos": 6, "photo_hw": (48, 64)},
       "unet_carvana": {"batches": [1], "photos": 4, "photo_hw": (40, 60)},
       "unetpp_dsb2018": {"batches": [1, 2], "photos": 6, "photo_hw": (32, 40)}}


def model_facts(model: str, dry: bool) -> dict[str, Any]:
    facts = dict(MODELS[model])
    if dry:
        facts.update(DRY[model])
    return facts


def network_input_hw(spec, photo_hw: tuple[int, int]) -> tuple[int, int]:
    """(H, W) of the network input that a photo of ``photo_hw`` becomes (padding included)."""
    from segdeploy.engine.transforms import preprocess_with_valid

    return tuple(preprocess_with_valid(np.zeros((*photo_hw, 3), np.uint8), spec)[0].shape[1:])


def device_for(dry: bool) -> str:
    return "cpu" if dry else "cuda"


# ------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------

def section_tests(dry: bool, timeout: float) -> dict[str, Any]:
    """``pytest -m gpu`` over the whole suite: the GPU tests (skipped where there is no CUDA).

    Verbose output goes to a file line by line, so a run stopped by its timeout still counts what
    had finished."""
    log = Path(tempfile.mkdtemp()) / "pytest.log"
    files = ["tests/test_torch_modes.py", "tests/test_gpu_paths.py"] if dry else ["tests"]
    # --tb=line -rfE: each failure's one-line reason; -v: one line per test as it ends (kept on a timeout)
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-v", "--tb=line", "-rfE", "-p", "no:cacheprovider", *files]
    if not dry:  # pytest-timeout is on the GPU machine: one hung test must not cost the others
        command += ["--timeout", "60"]
    t0 = time.perf_counter()
    timed_out = False
    with log.open("w") as sink:
        try:
            proc = subprocess.run(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, timeout=timeout)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            timed_out, code = True, None
    text = log.read_text(errors="replace")
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    failures = []
    for line in text.splitlines():
        if "::" not in line:
            continue
        for word, key in ((" PASSED", "passed"), (" FAILED", "failed"), (" ERROR", "failed"), (" SKIPPED", "skipped")):
            if word in line and not line.startswith(("FAILED ", "ERROR ")):
                counts[key] += 1
                if key == "failed":
                    failures.append(line.split(" ")[0])
                break
    if timed_out:
        counts["failed"] += 1
        failures.append(f"the run did not finish within {timeout:.0f} s")
    return {**counts, "seconds": round(time.perf_counter() - t0, 1), "exit_code": code, "timed_out": timed_out,
            "failures": failures, "output_tail": text[-4000:]}


# ------------------------------------------------------------------------------------------------
# errors: element-wise and task errors of every CUDA precision against PyTorch fp32 on the CPU
# ------------------------------------------------------------------------------------------------

CANDIDATES = [("fp32", {}), ("tf32", {}), ("fp16", {}), ("fp16", {"cast": "half", "channels_last": True}),
              ("bf16", {"cast": "half", "channels_last": True})]


def _error_stats(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Quantiles of |out - ref| / scale (scale = the image's largest |ref|) and the smallest atol
    that the share 0.99 / 0.999 of elements would need beside rtol = 1e-2."""
    scale = float(np.abs(ref).max()) or 1.0
    err = np.abs(out.astype(np.float64) - ref) / scale
    rel = np.abs(ref) / scale
    need = np.maximum(err - 1e-2 * rel, 0.0)
    return {"q50": float(np.quantile(err, 0.5)), "q99": float(np.quantile(err, 0.99)),
            "q999": float(np.quantile(err, 0.999)), "max": float(err.max()),
            "atol_q99_at_rtol1e-2": float(np.quantile(need, 0.99)),
            "atol_q999_at_rtol1e-2": float(np.quantile(need, 0.999)),
            "finite": bool(np.isfinite(out).all())}


def section_errors(dry: bool, timeout: float) -> dict[str, Any]:
    from segdeploy.backends import open_runtime
    from segdeploy.backends.auto import generated_images
    from segdeploy.engine.transforms import preprocess

    from _common import judge_photos

    device = device_for(dry)
    results: dict[str, Any] = {}
    plans = [("u2netp", None)] + [(m, "random") for m in ("u2netp", "unet_carvana", "unetpp_dsb2018")]
    if dry:
        plans = [("unetpp_dsb2018", "random")]
    for model, weights in plans:
        key = f"{model}:{weights or 'trained'}"
        photos = judge_photos() if weights is None else []
        images = (photos + generated_images(16, 96 if dry else 360, 128 if dry else 480, seed=5))[: 2 if dry else 16]
        reference = open_runtime(model, "torch", device="cpu", precision="fp32", weights=weights)
        inputs = [preprocess(image, reference.spec)[None] for image in images]
        ref_outputs = [reference.run(x) for x in inputs]
        rows = {}
        for precision, options in CANDIDATES if not dry else CANDIDATES[:1]:
            label = precision + "".join(f"+{k}={v}" for k, v in sorted(options.items()))
            try:
                runtime = open_runtime(model, "torch", device=device, precision=precision, weights=weights, **options)
            except Exception as exc:  # noqa: BLE001 - recorded, the others go on
                rows[label] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            per_output: dict[int, list[dict[str, float]]] = {}
            for x, ref_out in zip(inputs, ref_outputs):
                for index, (r, c) in enumerate(zip(ref_out, runtime.run(x))):
                    per_output.setdefault(index, []).append(_error_stats(r[0], c[0]))
            rows[label] = {str(i): {k: (max(s[k] for s in stats) if k != "finite" else all(s[k] for s in stats))
                                    for k in stats[0]} for i, stats in per_output.items()}
        results[key] = {"images": len(images), "rows": rows}
    return results


# ------------------------------------------------------------------------------------------------
# peers: plain PyTorch eager / CUDA graphs / torch.compile, fp16 channels_last, pure images/s
# ------------------------------------------------------------------------------------------------

def _timed(fn, x, seconds: float, cuda: bool) -> float:
    import torch

    for _ in range(3):
        fn(x)
    if cuda:
        torch.cuda.synchronize()
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn(x)
        count += 1
        if cuda and count % 8 == 0:
            torch.cuda.synchronize()
    if cuda:
        torch.cuda.synchronize()
    return count * x.shape[0] / (time.perf_counter() - t0)


def _graphed(module, x):
    import torch

    static = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(3):
            module(static)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode():
        graph_out = module(static)

    def replay(batch):
        static.copy_(batch)
        graph.replay()
        return graph_out
    return replay


def section_peers(dry: bool, timeout: float, models: list[str]) -> dict[str, Any]:
    import torch

    from segdeploy.core.registry import get_spec
    from segdeploy.zoo import create_model

    device = device_for(dry)
    cuda = device == "cuda"
    seconds = 0.3 if dry else 1.0
    out: dict[str, Any] = {}
    for model in models:
        facts = model_facts(model, dry)
        spec = get_spec(model)
        size = network_input_hw(spec, facts["photo_hw"])
        dtype = torch.float16 if cuda else torch.float32
        module = create_model(model, weights="random").eval().to(device, dtype).to(memory_format=torch.channels_last)
        rows: dict[str, dict[str, float]] = {"eager_fp16": {}, "cudagraphs_fp16": {}, "compile_fp16": {}}
        compile_seconds = {}
        with torch.inference_mode():
            for batch in facts["batches"]:
                x = torch.randn(batch, 3, *size, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
                rows["eager_fp16"][str(batch)] = _timed(module, x, seconds, cuda)
                if cuda:
                    rows["cudagraphs_fp16"][str(batch)] = _timed(_graphed(module, x), x, seconds, cuda)
        # The dry run (CI, CPU) leaves the compile peer out: an inductor build on 2 cores takes minutes.
        compiled = None if dry else torch.compile(module, dynamic=False)
        best_batch = max(rows["eager_fp16"], key=lambda b: rows["eager_fp16"][b])
        for batch in facts["compile_batches"] if compiled is not None else []:
            x = torch.randn(batch, 3, *size, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
            t0 = time.perf_counter()
            with torch.inference_mode():
                compiled(x)
                if cuda:
                    torch.cuda.synchronize()
                compile_seconds[str(batch)] = round(time.perf_counter() - t0, 1)
                rows["compile_fp16"][str(batch)] = _timed(compiled, x, seconds, cuda)
        best = {name: max(values.values()) if values else None for name, values in rows.items()}
        out[model] = {"images_per_s": rows, "best": best, "best_eager_batch": best_batch,
                      "compile_seconds": compile_seconds,
                      "segdeploy_runtimes": _product_runtimes(model, facts, size, device, seconds, dry)}
    return out


#: segdeploy's own torch runtimes timed beside the peers (device-resident input, no copies)
PRODUCT_VARIANTS = [{"precision": "fp16", "channels_last": True},
                    {"precision": "fp16", "channels_last": True, "cast": "half"},
                    {"precision": "fp16", "channels_last": True, "mode": "cudagraphs"},
                    {"precision": "fp16", "channels_last": True, "cast": "half", "mode": "cudagraphs"},
                    {"precision": "bf16", "channels_last": True, "cast": "half", "mode": "cudagraphs"},
                    {"precision": "fp16", "channels_last": True, "cast": "half", "mode": "compile",
                     "compile_mode": "default"}]


def _product_runtimes(model, facts, size, device, seconds, dry) -> list[dict[str, Any]]:
    import torch

    from segdeploy.backends import open_runtime

    rows = []
    batch = facts["batches"][0] if dry else facts["compile_batches"][0]
    for variant in PRODUCT_VARIANTS[:1] if dry else PRODUCT_VARIANTS:
        options = dict(variant)
        precision = options.pop("precision")
        precision = "fp32" if dry else precision
        row: dict[str, Any] = {"precision": precision, **options, "batch": batch}
        try:
            rt = open_runtime(model, "torch", device=device, precision=precision, weights="random", **options)
            x = torch.randn(batch, 3, *size, device=device)
            t0 = time.perf_counter()
            rt.run_device(x)
            row["first_call_seconds"] = round(time.perf_counter() - t0, 1)
            row["images_per_s"] = _timed(rt.run_device, x, seconds, device == "cuda")
            row["compile_fallback"] = rt.describe().get("compile_fallback")
        except Exception as exc:  # noqa: BLE001 - recorded, the others go on
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------
# predict: the product command end to end, and the pure rate of the configuration it chose
# ------------------------------------------------------------------------------------------------

def section_predict(dry: bool, timeout: float, models: list[str], extra: list[str]) -> dict[str, Any]:
    device = device_for(dry)
    out: dict[str, Any] = {}
    for model in models:
        with tempfile.TemporaryDirectory(prefix=f"gpu-check-{model}-") as scratch:  # photos and masks, removed after
            out[model] = _predict_row(model, Path(scratch), device, dry, timeout, extra)
    return out


def _predict_row(model: str, scratch: Path, device: str, dry: bool, timeout: float,
                 extra: list[str]) -> dict[str, Any]:
    """One model's predict row: the command's wall time and summary, and its configuration's pure rate."""
    from _common import photo_folder

    facts = model_facts(model, dry)
    folder, description = photo_folder(scratch / "in", facts["photos"], facts["photo_hw"])
    summary_path = scratch / "summary.json"
    command = [sys.executable, "-m", "segdeploy.cli.main", "predict", model, str(folder), "-o",
               str(scratch / "out"), "--device", device, "--quiet", "--json", str(summary_path), *extra]
    if facts["weights"]:
        command += ["--weights", facts["weights"]]
    if dry:  # the CPU auto probe is not what this check measures
        command += ["--backend", "torch"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout * facts["share"])
        code, tail = proc.returncode, (proc.stdout + proc.stderr)[-1500:]
    except subprocess.TimeoutExpired as exc:  # this model's row says so; the next model still runs
        code, tail = None, f"timed out after {timeout * facts['share']:.0f} s: " + str(exc.stderr or "")[-1200:]
    wall = round(time.perf_counter() - t0, 2)
    row: dict[str, Any] = {"images": description, "wall_seconds": wall, "exit_code": code, "output_tail": tail}
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        row["summary"] = {k: summary.get(k) for k in ("written", "failed", "images_per_s", "load_seconds",
                                                     "backend", "precision", "runtime", "stage_seconds",
                                                     "choice") if k in summary}
        row["e2e_images_per_s"] = summary.get("images_per_s")
        row["pure_images_per_s"] = _pure_rate(model, facts, summary.get("runtime") or {}, device, dry)
    return row


def _pure_rate(model: str, facts: dict[str, Any], runtime_info: dict[str, Any], device: str, dry: bool):
    """images/s of the configuration predict ran, on device-resident inputs at predict's batch
    (no decoding, copies or preprocessing): the engine's own rate, what end to end is judged against."""
    import torch

    from segdeploy.backends import open_runtime
    from segdeploy.backends.auto_cuda import DEFAULT_CUDA_BATCH
    from segdeploy.core.registry import get_spec

    if runtime_info.get("backend") != "torch":
        return None
    options = {k: runtime_info[k] for k in ("mode", "channels_last", "cast", "compile_mode") if runtime_info.get(k)}
    if runtime_info.get("batch_buckets"):
        options["batch_buckets"] = tuple(runtime_info["batch_buckets"])
    spec = get_spec(model)
    size = network_input_hw(spec, facts["photo_hw"])
    batch = 2 if dry else DEFAULT_CUDA_BATCH
    try:
        rt = open_runtime(model, "torch", device=device, precision=runtime_info.get("precision", "fp32"),
                          weights=facts["weights"], **options)
        x = torch.randn(batch, 3, *size, device=device)
        return _timed(rt.run_device, x, 0.3 if dry else 2.0, device == "cuda")
    except Exception as exc:  # noqa: BLE001 - recorded with the row
        return f"{type(exc).__name__}: {exc}"[:300]


def section_serve(dry: bool, timeout: float, concurrency: int, requests: int) -> dict[str, Any]:
    """Batching server against one request per forward pass, at ``concurrency`` (loopback)."""
    from gpu_serve import measure_serving

    return measure_serving(device_for(dry), concurrency, 8 if dry else requests, dry)
