"""Shared by cpu_compare.py and gpu_suite.py: peer runtimes, interleaved repeats, result files.

A "peer" is what a user gets without segdeploy (plain ONNX Runtime, OpenVINO defaults, plain
PyTorch); each is a small object with the runtime interface ``segdeploy.bench.harness`` drives
(``run``, ``warmup``, ``describe``, and on CUDA ``run_device``), so peers and segdeploy's own
runtimes are timed by the same harness, in one process, on one machine.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def export_plain_onnx(model_name: str, input_size: tuple[int, int], folder: Path, weights: str = "random") -> Path:
    """Export the rebuilt upstream network as a user would: torch.onnx.export, opset 17, dynamic batch."""
    import torch

    from segdeploy import get_spec
    from segdeploy.zoo import create_model

    spec = get_spec(model_name)
    module = create_model(model_name, weights=weights)
    x = torch.randn(1, 3, *input_size)
    path = folder / f"{model_name}_{input_size[0]}x{input_size[1]}.onnx"
    names = list(spec.output_names)
    try:
        torch.onnx.export(module, (x,), str(path), opset_version=17, input_names=["input"], output_names=names,
                          dynamic_axes={"input": {0: "batch"}, **{n: {0: "batch"} for n in names}}, dynamo=False)
    except Exception:  # noqa: BLE001 - TorchScript exporter gone or failing: the dynamo exporter
        torch.onnx.export(module, (x,), str(path), opset_version=17, input_names=["input"], output_names=names,
                          dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True)
    return path


class PlainOnnxRuntime:
    """onnxruntime.InferenceSession, CPU provider, every graph optimisation (ORT_ENABLE_ALL), defaults otherwise."""

    name = "onnxruntime-plain"

    def __init__(self, onnx_path: Path, providers: list[str] | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.providers = providers or ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(onnx_path), options, providers=self.providers)
        self.input_name = self.session.get_inputs()[0].name
        self._ort = ort

    def warmup(self, shape) -> None:
        pass

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: batch})

    def describe(self) -> dict[str, Any]:
        return {"backend": "onnxruntime", "precision": "fp32", "library": f"onnxruntime {self._ort.__version__}",
                "provider": self.session.get_providers()[0], "graph_optimization": "ORT_ENABLE_ALL", "peer": True}


class OpenVinoDefault:
    """OpenVINO CPU with its defaults (inference precision it picks itself) and the LATENCY hint.

    The ONNX model is reshaped to each batch size and compiled once per shape (in ``warmup``),
    as ``benchmark_app -shape`` does.
    """

    name = "openvino-default"

    def __init__(self, onnx_path: Path):
        import openvino as ov

        self.ov = ov
        self.core = ov.Core()
        self.onnx_path = onnx_path
        self.compiled: dict[tuple, Any] = {}

    def warmup(self, shape) -> None:
        shape = tuple(int(s) for s in shape)
        if shape not in self.compiled:
            model = self.core.read_model(str(self.onnx_path))
            model.reshape({model.inputs[0].get_any_name(): self.ov.PartialShape(list(shape))})
            compiled = self.core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
            self.compiled[shape] = (compiled, compiled.create_infer_request())

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        self.warmup(batch.shape)
        compiled, request = self.compiled[tuple(batch.shape)]
        results = request.infer({0: batch})
        return [np.asarray(results[out], dtype=np.float32) for out in compiled.outputs]

    def describe(self) -> dict[str, Any]:
        precision = None
        try:  # what the compiled model really uses (the plugin's choice when no hint is given)
            compiled = next(iter(self.compiled.values()))[0] if self.compiled else None
            source = compiled if compiled is not None else self.core
            value = (source.get_property("INFERENCE_PRECISION_HINT") if compiled is not None
                     else source.get_property("CPU", "INFERENCE_PRECISION_HINT"))
            precision = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
        except Exception:  # noqa: BLE001 - informative only
            pass
        return {"backend": "openvino", "precision": "default", "library": f"openvino {self.ov.__version__}",
                "device": "CPU", "performance_hint": "LATENCY", "inference_precision": precision, "peer": True}


class TorchEager:
    """Plain PyTorch: the rebuilt upstream module, eager, optionally fp16 / channels_last / torch.compile."""

    def __init__(self, model_name: str, device: str = "cpu", dtype: str = "fp32", channels_last: bool = False,
                 compile_mode: str | None = None, weights: str = "random"):
        import torch

        from segdeploy.zoo import create_model

        self.torch = torch
        self.device = torch.device(device)
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        module = create_model(model_name, weights=weights).to(self.device, self.dtype)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.compile_mode = compile_mode
        if compile_mode:
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True  # fold weights as constants (PERFORMANCE.md §3 peer)
            # One static graph per batch size (no automatic dynamic shapes after the 2nd size).
            for knob in ("cache_size_limit", "recompile_limit"):
                if hasattr(torch._dynamo.config, knob):
                    setattr(torch._dynamo.config, knob, 64)
            module = torch.compile(module, mode=compile_mode, dynamic=False)
        self.module = module
        self.name = f"torch-eager-{dtype}" + ("-cl" if channels_last else "") + (f"-compile-{compile_mode}"
                                                                                 if compile_mode else "")
        self.settings = {"dtype": dtype, "channels_last": channels_last, "compile_mode": compile_mode}

    def _forward(self, x):
        with self.torch.inference_mode():
            out = self.module(x.to(self.dtype).contiguous(memory_format=self.memory_format))
        return list(out) if isinstance(out, (tuple, list)) else [out]

    def warmup(self, shape) -> None:
        if self.compile_mode:  # compile + autotune for this shape outside the timed region
            x = self.torch.randn(*shape, device=self.device)
            for _ in range(3):
                self._forward(x)

    def run_device(self, x):
        return self._forward(x)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        x = self.torch.from_numpy(batch).to(self.device, non_blocking=False)
        return [o.float().cpu().numpy() for o in self._forward(x)]

    def describe(self) -> dict[str, Any]:
        return {"backend": "torch", "precision": self.settings["dtype"], "device": str(self.device),
                "library": f"torch {self.torch.__version__}", "peer": True, **self.settings}


# ------------------------------------------------------------------------------------------------
# Running variants in interleaved repeats
# ------------------------------------------------------------------------------------------------


@dataclass
class Variant:
    """One configuration to time: ``open()`` returns a runtime (raising when it cannot exist here)."""

    key: str
    label: str
    open: Callable[[], Any]
    runtime: Any = None
    error: str | None = None
    reports: list = field(default_factory=list)


def run_variants(model: str, variants: list[Variant], *, batch_sizes: list[int], input_size: tuple[int, int],
                 repeats: int, warmup: int, iters: int | None, duration: float | None, device: str = "cpu",
                 limit_images_per_s: float | None = None, log: Callable[[str], None] = print) -> None:
    """Open every variant, then time them in ``repeats`` interleaved rounds (v1, v2, ..., v1, v2, ...).

    Interleaving spreads slow drifts (thermal, other processes) over all variants alike; the spread
    over rounds is the run-to-run noise a difference must exceed.
    """
    from segdeploy.bench.harness import benchmark
    from segdeploy.bench.options import BenchOptions

    for v in variants:
        try:
            log(f"[{model}] opening {v.label}")
            v.runtime = v.open()
        except Exception as exc:  # noqa: BLE001 - recorded in the results, the others go on
            v.error = f"{type(exc).__name__}: {exc}"
            log(f"[{model}] {v.label} unavailable: {v.error}")
    for round_index in range(repeats):
        for v in variants:
            if v.runtime is None:
                continue
            try:
                log(f"[{model}] round {round_index + 1}/{repeats}: {v.label}")
                options = BenchOptions(batch_sizes=batch_sizes, input_size=input_size, warmup=warmup, iters=iters,
                                       duration=duration, device=device, label=v.label,
                                       count_flops=round_index == 0, limit_images_per_s=limit_images_per_s)
                report = benchmark(model, options, runtime=v.runtime)
                v.reports.append(report)
            except Exception as exc:  # noqa: BLE001
                v.error = f"{type(exc).__name__}: {exc}"
                log(f"[{model}] {v.label} failed: {v.error}")
                traceback.print_exc(file=sys.stderr)
                v.runtime = None


def summarise(model: str, variants: list[Variant], use_device_only: bool = False) -> list[dict[str, Any]]:
    """Per (variant, batch size): median, min and max images/s over the rounds."""
    rows = []
    for v in variants:
        by_batch: dict[int, list[float]] = {}
        only: dict[int, list[float]] = {}
        for report in v.reports:
            for r in report.results:
                by_batch.setdefault(r.batch_size, []).append(r.images_per_s)
                if r.device_only is not None:
                    only.setdefault(r.batch_size, []).append(r.device_only.images_per_s)
        if not by_batch:
            rows.append({"model": model, "variant": v.key, "label": v.label, "error": v.error})
            continue
        for bs, values in sorted(by_batch.items()):
            row = {"model": model, "variant": v.key, "label": v.label, "batch_size": bs, "rounds": len(values),
                   "images_per_s_median": statistics.median(values), "images_per_s_min": min(values),
                   "images_per_s_max": max(values), "error": v.error}
            if bs in only:
                row.update(device_only_images_per_s_median=statistics.median(only[bs]),
                           device_only_images_per_s_min=min(only[bs]),
                           device_only_images_per_s_max=max(only[bs]))
            rows.append(row)
    return rows


def fmt_rate(row: dict[str, Any] | None, prefix: str = "images_per_s") -> str:
    if not row or f"{prefix}_median" not in row:
        return "—"
    med, lo, hi = row[f"{prefix}_median"], row[f"{prefix}_min"], row[f"{prefix}_max"]
    return f"{med:,.2f} ({lo:,.2f}–{hi:,.2f})" if med < 100 else f"{med:,.0f} ({lo:,.0f}–{hi:,.0f})"


def segdeploy_runtime(model: str, device: str, precision: str | None = None, backend: str | None = None,
                      weights: str = "random", **options: Any):
    """Open segdeploy's own runtime: ``backend``/``precision`` None = the static ``auto`` choice
    (no probe: benchmarks time configurations, they do not choose them)."""
    from segdeploy.backends import open_runtime, select_auto

    if backend is None:
        backend, auto_precision = select_auto(model, device=device, precision=precision)
        precision = precision or auto_precision
    return open_runtime(model, backend=backend, device=device, precision=precision or "fp32", weights=weights,
                        **options)


def write_results(kind: str, payload: dict[str, Any], markdown: str, out_dir: Path, tag: str | None) -> tuple[Path, Path]:
    """Write ``<kind>_<date>[_tag].json`` and ``.md`` into ``out_dir`` (atomically)."""
    from segdeploy.engine.writers import atomic_write_text

    stem = f"{kind}_{date.today().isoformat()}" + (f"_{tag}" if tag else "")
    json_path = atomic_write_text(out_dir / f"{stem}.json", json.dumps(payload, indent=2, default=str) + "\n")
    md_path = atomic_write_text(out_dir / f"{stem}.md", markdown)
    return Path(json_path), Path(md_path)


def scratch_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="segdeploy-benchmarks-")


# ------------------------------------------------------------------------------------------------
# Photos, load average
# ------------------------------------------------------------------------------------------------

#: scikit-image's sample photos, split once: judging (fidelity) and calibration never share a photo
JUDGE_PHOTOS = ("astronaut", "coffee", "rocket", "chelsea", "camera", "coins", "horse", "moon")
CALIB_PHOTOS = ("hubble_deep_field", "immunohistochemistry", "retina", "colorwheel", "clock", "page", "text",
                "brick", "grass", "gravel", "logo")


def sample_photos(names: tuple[str, ...], flips: bool = True) -> list[np.ndarray]:
    """RGB uint8 photos from ``skimage.data`` (grey ones as RGB); with ``flips`` each is also
    mirrored left-right, doubling the set. Empty when scikit-image (or a photo) is missing."""
    try:
        import skimage.data as data
    except ImportError:
        return []
    out = []
    for name in names:
        try:
            image = np.asarray(getattr(data, name)())
        except Exception:  # noqa: BLE001 - a photo missing from this scikit-image: use the others
            continue
        image = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
        out.append(np.ascontiguousarray(image.astype(np.uint8)))
    if flips:
        out += [np.ascontiguousarray(image[:, ::-1]) for image in out]
    return out


def judge_photos() -> list[np.ndarray]:
    return sample_photos(JUDGE_PHOTOS)


def calibration_photos() -> list[np.ndarray]:
    return sample_photos(CALIB_PHOTOS)


def photo_folder(folder: Path, count: int, size_hw: tuple[int, int], quality: int = 90) -> tuple[Path, str]:
    """Write ``count`` JPEGs of ``size_hw`` (H, W) into ``folder``: sample photos resized to cover
    and centre-cropped, cycled, varied by a flip and a brightness shift; generated photo-like images
    when scikit-image is missing. Returns (folder, description)."""
    from PIL import Image

    from segdeploy.backends.auto import generated_images

    h, w = size_hw
    sources = sample_photos(JUDGE_PHOTOS + CALIB_PHOTOS, flips=False)
    kind = f"{len(sources)} scikit-image sample photos, cycled" if sources else "generated photo-like images"
    if not sources:
        sources = generated_images(8, h, w, seed=77)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = Image.fromarray(sources[i % len(sources)])
        scale = max(w / image.width, h / image.height)
        image = image.resize((max(w, round(image.width * scale)), max(h, round(image.height * scale))),
                             Image.Resampling.BICUBIC)
        left, top = (image.width - w) // 2, (image.height - h) // 2
        array = np.asarray(image.crop((left, top, left + w, top + h))).astype(np.int16)
        if (i // len(sources)) % 2:
            array = array[:, ::-1]
        array = np.clip(array + (i % 5) * 6 - 12, 0, 255).astype(np.uint8)
        Image.fromarray(array).save(folder / f"{i:04d}.jpg", quality=quality)
    return folder, f"{count} JPEG {w}x{h} from {kind}"


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (other engineers share these cores: record, then judge)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return [float("nan")] * 3


@dataclass
class TimedCommand:
    """A command run to completion: its result, wall seconds, CPU seconds (user + sys of the
    process and its children) and the load average just before and after."""

    done: subprocess.CompletedProcess
    wall_s: float
    cpu_s: float
    load_before: list[float]
    load_after: list[float]


def timed_command(command: list[str], env: dict[str, str], cwd: Path | None = None) -> TimedCommand:
    """Run ``command`` (output captured) and time it; its own CPU time says what a loaded machine's
    wall time cannot."""
    load_before = load_average()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return TimedCommand(done, wall, cpu, load_before, load_average())
