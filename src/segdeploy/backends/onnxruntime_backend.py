"""ONNX Runtime backend.

Devices and execution providers:
    cpu: CPUExecutionProvider.
    cuda: CUDAExecutionProvider (``provider="cuda"``, default) or TensorrtExecutionProvider
        (``provider="tensorrt"``), only when listed by ``onnxruntime.get_available_providers()``
        (the ``onnxruntime-gpu`` package); the session must also report it as active after creation
        (ONNX Runtime quietly drops a provider whose CUDA libraries fail to load). Nodes a GPU
        provider cannot run are placed on the CPU provider by ONNX Runtime, per node.

Precisions:
    fp32: the exported graph.
    fp16: the graph converted with ``onnxruntime.transformers.float16.convert_float_to_float16``
        (``keep_io_types=True``: float32 in and out, fp16 inside); on TensorRT, ``trt_fp16_enable``
        on the fp32 graph instead. Unavailable when the conversion tool is missing or the session
        cannot be created. On the CPU provider, which has few fp16 kernels, ONNX Runtime inserts
        and folds casts so that most operators compute in fp32 on fp16-rounded weights (an fp16
        overflow input of 1e6 comes out finite); ``describe()["notes"]`` says so.
    int8: a quantized ONNX (QDQ or QOperator, e.g. from ``segdeploy quantize``); asking for int8 with
        an fp32 file, or for fp32/fp16 with an int8 file, is an error.
    bf16: not offered (ONNX Runtime has no bf16 convolution kernels on the CPU or CUDA provider).

Options:
    threads (int): intra-op threads; default the number of physical cores (hyper-threads slow
        convolution-bound graphs down on 2 cores).
    inter_threads (int): inter-op threads (default 1; the graphs are sequential chains).
    provider ("cuda" | "tensorrt"): GPU provider for device="cuda".
    optimization ("all" | "extended" | "basic" | "disable"): graph optimisation level (default all).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from segdeploy.backends.base import Runtime, RuntimeUnavailable, physical_cores, register_runtime

_GPU_PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC",
           "disable": "ORT_DISABLE_ALL"}


@register_runtime
class OnnxRuntimeRuntime(Runtime):
    name = "onnxruntime"
    library = "onnxruntime"
    precisions = ("fp32", "fp16", "int8")
    devices = ("cpu", "cuda")
    int8_quantizers = ("ort-qdq",)
    auto_candidates = {"cpu": (("fp32", None), ("int8", "ort-qdq"))}
    preference = 20
    option_names = ("threads", "inter_threads", "provider", "optimization")

    @classmethod
    def unavailable_reason(cls) -> str:
        return "ONNX Runtime is not installed (pip install onnxruntime, or onnxruntime-gpu for CUDA)"

    @classmethod
    def check(cls, device: str, precision: str, options: dict[str, Any] | None = None) -> None:
        if precision == "bf16" and cls.is_available():
            raise RuntimeUnavailable("ONNX Runtime has no bf16 convolution kernels (CPU or CUDA provider); "
                                     "use openvino bf16 on CPU or torch bf16")
        super().check(device, precision, options)
        import onnxruntime as ort

        options = options or {}
        if options.get("optimization", "all") not in _LEVELS:
            raise ValueError(f"optimization must be one of {', '.join(_LEVELS)}")
        if str(device).startswith("cuda"):
            provider = _GPU_PROVIDERS.get(options.get("provider", "cuda"))
            if provider is None:
                raise ValueError(f"provider must be one of {', '.join(_GPU_PROVIDERS)}")
            available = ort.get_available_providers()
            if provider not in available:
                raise RuntimeUnavailable(
                    f"ONNX Runtime has no {provider} in this install (providers: {', '.join(available)}); "
                    "install onnxruntime-gpu")
        elif options.get("provider"):
            raise ValueError("provider applies to device='cuda' only")
        if precision == "fp16" and not _has_fp16_converter():
            raise RuntimeUnavailable("fp16 on ONNX Runtime needs onnxruntime.transformers.float16 "
                                     "(part of the onnxruntime wheel), which cannot be imported here")

    def __init__(self, spec, device: str = "cpu", precision: str = "fp32", **options: Any):
        super().__init__(spec, device, precision, **options)
        self.threads = int(options.get("threads") or physical_cores())
        self.inter_threads = int(options.get("inter_threads") or 1)
        self.provider_key = options.get("provider", "cuda")
        self.optimization = options.get("optimization", "all")
        self.onnx_path: str | None = None
        self.session = None
        self.notes: list[str] = []

    def _providers(self) -> list:
        if not str(self.device).startswith("cuda"):
            return ["CPUExecutionProvider"]
        device_id = int(str(self.device).split(":")[1]) if ":" in str(self.device) else 0
        cuda = ("CUDAExecutionProvider", {"device_id": device_id})
        if self.provider_key == "tensorrt":
            trt = ("TensorrtExecutionProvider", {"device_id": device_id,
                                                 "trt_fp16_enable": self.precision == "fp16",
                                                 "trt_int8_enable": self.precision == "int8"})
            return [trt, cuda, "CPUExecutionProvider"]
        return [cuda, "CPUExecutionProvider"]

    def load(self, artifact) -> "OnnxRuntimeRuntime":
        import onnx
        import onnxruntime as ort

        from segdeploy.convert.onnx_info import is_quantized

        path = Path(artifact)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file")
        self.onnx_path = str(path)
        proto = onnx.load(str(path))
        quantized = is_quantized(proto)
        if self.precision == "int8" and not quantized:
            raise ValueError(f"{path}: precision int8 needs a quantized ONNX (segdeploy quantize); this file has "
                             "no QuantizeLinear/DequantizeLinear nodes")
        if self.precision != "int8" and quantized:
            raise ValueError(f"{path} is quantized (int8); open it with precision='int8'")
        model_bytes: bytes | str = str(path)
        tensorrt = str(self.device).startswith("cuda") and self.provider_key == "tensorrt"
        if self.precision == "fp16" and not tensorrt:  # TensorRT builds fp16 engines from the fp32 graph
            import warnings

            from onnxruntime.transformers.float16 import convert_float_to_float16

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                half = convert_float_to_float16(proto, keep_io_types=True)
            model_bytes = half.SerializeToString()
            self.notes.append("graph converted to fp16 (convert_float_to_float16, keep_io_types=True)")
            if not str(self.device).startswith("cuda"):
                # Measured: an input of 1e6 (inf in fp16) comes out finite, so the input cast is gone.
                self.notes.append("the CPU provider has few fp16 kernels: ONNX Runtime inserts and folds casts, so "
                                  "most operators compute in fp32 on fp16-rounded weights")
        del proto

        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[self.optimization])
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = self.inter_threads
        so.log_severity_level = 3
        providers = self._providers()
        try:
            self.session = ort.InferenceSession(model_bytes, so, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises several types; the precision can't run here
            if self.precision != "fp32":
                raise RuntimeUnavailable(f"ONNX Runtime cannot run {path.name} in {self.precision} on {self.device}: "
                                         f"{type(exc).__name__}: {str(exc)[:300]}") from exc
            raise
        wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
        active = self.session.get_providers()
        if wanted not in active:
            raise RuntimeUnavailable(f"ONNX Runtime did not activate {wanted} (active: {', '.join(active)}); "
                                     "check the CUDA / cuDNN / TensorRT libraries onnxruntime-gpu needs")
        self.input_name = self.session.get_inputs()[0].name
        names = [o.name for o in self.session.get_outputs()]
        wanted_names = list(self.spec.output_names)
        if set(wanted_names) <= set(names):
            self.output_names = wanted_names
        elif len(names) == len(wanted_names):
            self.output_names = names
            self.notes.append(f"ONNX output names {names} differ from the spec's; taken in graph order")
        else:
            raise ValueError(f"{path}: outputs {names} do not match {self.spec.name}'s {wanted_names}")
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.loaded = True
        return self

    def run(self, batch: np.ndarray, outputs: Sequence[int] | None = None) -> list[np.ndarray]:
        batch = self._check_batch(batch)
        names = [self.output_names[i] for i in self._output_indices(outputs)]
        # Only the named outputs are fetched from the session (the others are computed, not copied).
        results = self.session.run(names, {self.input_name: batch})
        return [np.asarray(o, dtype=np.float32) for o in results]

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        from segdeploy.core.environment import cpu_name

        cuda = str(self.device).startswith("cuda")
        info: dict[str, Any] = {
            "backend": self.name,
            "model": self.spec.name,
            "onnxruntime": ort.__version__,
            "device": str(self.device),
            "device_name": _gpu_name() if cuda else cpu_name(),
            "precision": self.precision,
            "providers": self.session.get_providers() if self.session else None,
            "intra_op_threads": self.threads,
            "inter_op_threads": self.inter_threads,
            "graph_optimization": self.optimization,
            "onnx": self.onnx_path,
            "notes": list(self.notes),
        }
        meta = getattr(self, "metadata", {})
        if "segdeploy_weights" in meta:
            import json

            info["weights"] = json.loads(meta["segdeploy_weights"])
        if "segdeploy_quantization" in meta:
            import json

            info["quantization"] = json.loads(meta["segdeploy_quantization"])
        return info


def _has_fp16_converter() -> bool:
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16  # noqa: F401
    except Exception:  # noqa: BLE001 - missing optional dependencies surface as various errors
        return False
    return True


def _gpu_name() -> str | None:
    from segdeploy.core.environment import gpu_info

    info = gpu_info()
    return info["name"] if info else None
