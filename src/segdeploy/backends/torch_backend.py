"""PyTorch backend: the network module itself, eager or compiled, on CPU or CUDA.

Precisions:
    fp32: the module as built.
    fp16 / bf16 with ``cast="autocast"`` (default): ``torch.autocast`` runs convolutions and matrix
        products in the low precision and keeps the operators of its fp32 list in fp32 (on CUDA:
        softmax, log, pow, sum, ...; the CPU list is shorter). That matters for wseg, whose class
        score sums mask x feature products over every pixel (Σ_hw at 1024² exceeds fp16's 65504).
        Values beyond 65504 inside a convolution still overflow: random-weight wseg in fp16
        autocast on the CPU gives Inf class scores, which ``segdeploy compare`` reports.
        ``cast="half"`` converts the whole module and the input instead (``.half()`` /
        ``.to(bfloat16)``): faster, no per-op casts, but every reduction is in the low precision;
        use it only where ``segdeploy compare`` passes.
    int8: not offered (use an int8 ONNX on ONNX Runtime or OpenVINO).

Options:
    channels_last (bool): NHWC memory format for module and input (faster convolutions on CUDA
        tensor cores and on oneDNN CPU kernels).
    compile (bool): ``torch.compile`` the module; ``compile_mode`` picks the mode (default
        "max-autotune" on CUDA — autotuned kernels plus CUDA graphs — and the default mode on CPU).
    cuda_graph (bool): eager only: capture one CUDA graph per input shape and replay it (removes
        kernel-launch overhead at small batches). With ``compile`` the compiled mode's own CUDA
        graphs are used instead.
    cast ("autocast" | "half"): how fp16/bf16 is applied, see above.
    threads (int): CPU intra-op threads (``torch.set_num_threads``, process-wide); default: leave
        PyTorch's choice.
    cudnn_benchmark (bool): CUDA only, default True: ``torch.backends.cudnn.benchmark`` (process-wide).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from segdeploy.backends.base import Runtime, RuntimeUnavailable, register_runtime

_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}


@register_runtime
class TorchRuntime(Runtime):
    name = "torch"
    library = "torch"
    precisions = ("fp32", "tf32", "fp16", "bf16")
    option_names = ("channels_last", "compile", "compile_mode", "cuda_graph", "cast", "threads", "cudnn_benchmark")

    @classmethod
    def unavailable_reason(cls) -> str:
        return "PyTorch is not installed (pip install torch)"

    @classmethod
    def check(cls, device: str, precision: str, options: dict[str, Any] | None = None) -> None:
        super().check(device, precision, options)
        import torch

        options = options or {}
        cuda = str(device).startswith("cuda")
        if cuda and not torch.cuda.is_available():
            raise RuntimeUnavailable(
                f"PyTorch sees no CUDA device (torch {torch.__version__}, built with CUDA "
                f"{torch.version.cuda or 'none'}); use --device cpu or install a CUDA build of torch")
        if not cuda and options.get("cuda_graph"):
            raise RuntimeUnavailable("cuda_graph needs device='cuda'")
        if options.get("cast", "autocast") not in ("autocast", "half"):
            raise ValueError(f"cast must be 'autocast' or 'half', got {options.get('cast')!r}")
        if precision == "tf32" and not cuda:
            raise RuntimeUnavailable("tf32 is a CUDA precision (TensorFloat-32 on Ampere and newer); on the CPU "
                                     "use fp32")
        if precision in _DTYPES:
            _probe_low_precision(device, precision, options.get("cast", "autocast"))

    def _set_tf32(self) -> None:
        """fp32 on CUDA must be fp32: PyTorch lets cuDNN convolutions use TF32 (10-bit mantissa) by
        default. The flags are process-wide, so they are set before every call."""
        if self.device_obj.type == "cuda":
            allow = self.precision == "tf32"
            self.torch.backends.cuda.matmul.allow_tf32 = allow
            self.torch.backends.cudnn.allow_tf32 = allow

    def __init__(self, spec, device: str = "cpu", precision: str = "fp32", **options: Any):
        super().__init__(spec, device, precision, **options)
        self.cast = options.get("cast", "autocast")
        self.channels_last = bool(options.get("channels_last", False))
        self.compiled = bool(options.get("compile", False))
        self.cuda_graph = bool(options.get("cuda_graph", False)) and not self.compiled
        cuda = str(device).startswith("cuda")
        self.compile_mode = options.get("compile_mode") or ("max-autotune" if cuda else None)
        self.threads = options.get("threads")
        self.model = None
        self._module = None
        self._graphs: dict[tuple[int, ...], tuple[Any, Any, Any]] = {}

    def load(self, artifact) -> "TorchRuntime":
        import torch

        if not isinstance(artifact, torch.nn.Module):
            raise TypeError(f"torch runtime loads an nn.Module, got {type(artifact).__name__}")
        if self.threads:
            torch.set_num_threads(int(self.threads))
        self.torch = torch
        self.device_obj = torch.device(self.device)
        if self.device_obj.type == "cuda":
            # Fixed input shapes: let cuDNN time its algorithms once per shape (PERFORMANCE.md §3).
            torch.backends.cudnn.benchmark = bool(self.options.get("cudnn_benchmark", True))
        module = artifact.eval().to(self.device_obj)
        if self.precision in _DTYPES and self.cast == "half":
            module = module.to(getattr(torch, _DTYPES[self.precision]))
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.model = artifact
        self._module = module
        if self.compiled:
            kwargs = {"mode": self.compile_mode} if self.compile_mode else {}
            self._module = torch.compile(module, **kwargs)
        self.loaded = True
        return self

    # -- execution ----------------------------------------------------------------------------
    def _autocast(self):
        import contextlib

        if self.precision in _DTYPES and self.cast == "autocast":
            # The autocast weight-cast cache must be off while a CUDA graph is captured (the cached
            # copies would be freed under the graph).
            return self.torch.autocast(self.device_obj.type, dtype=getattr(self.torch, _DTYPES[self.precision]),
                                       cache_enabled=not self.cuda_graph)
        return contextlib.nullcontext()

    def _prepare(self, x):
        torch = self.torch
        if self.precision in _DTYPES and self.cast == "half":
            x = x.to(getattr(torch, _DTYPES[self.precision]))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _forward(self, x) -> list:
        self._set_tf32()
        with self.torch.inference_mode(), self._autocast():
            out = self._module(self._prepare(x))
        outputs = list(out) if isinstance(out, (tuple, list)) else [out]
        if len(outputs) != len(self.spec.output_names):
            raise RuntimeError(f"{self.spec.name}: the module returned {len(outputs)} outputs, the spec names "
                               f"{len(self.spec.output_names)} ({', '.join(self.spec.output_names)})")
        return outputs

    def _graph_forward(self, x) -> list:
        """Replay (capturing on first use) the CUDA graph for this input shape."""
        torch = self.torch
        key = tuple(x.shape)
        if key not in self._graphs:
            static_in = x.clone()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):  # cuDNN autotuning and allocator warm-up before capture
                    self._forward(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._forward(static_in)
            self._graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out

    def run_device(self, x) -> list:
        """Forward on a device-resident torch tensor; outputs stay on the device (bench extension).

        Outputs of a CUDA-graph replay are the graph's static buffers: read them before the next call.
        """
        if self.cuda_graph:
            return self._graph_forward(x)
        return self._forward(x)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        batch = self._check_batch(batch)
        x = self.torch.from_numpy(batch).to(self.device_obj)
        outputs = self.run_device(x)
        return [o.detach().float().cpu().numpy() for o in outputs]

    def describe(self) -> dict[str, Any]:
        import torch

        from segdeploy.core.environment import cpu_name

        cuda = self.device_obj.type == "cuda" if self.loaded else str(self.device).startswith("cuda")
        info: dict[str, Any] = {
            "backend": self.name,
            "model": self.spec.name,
            "torch": torch.__version__,
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device_obj) if cuda else cpu_name(),
            "precision": self.precision,
            "cast": self.cast if self.precision in _DTYPES else None,
            "channels_last": self.channels_last,
            "compile": self.compiled,
            "compile_mode": self.compile_mode if self.compiled else None,
            "cuda_graph": self.cuda_graph,
            "threads": torch.get_num_threads(),
        }
        if cuda:
            info.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                        cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
                        tf32=self.precision == "tf32")
        record = getattr(self.model, "segdeploy_weights", None)
        if record is not None:
            info["weights"] = record.to_dict()
        return info


def _probe_low_precision(device: str, precision: str, cast: str) -> None:
    """Run a tiny convolution in the requested precision; RuntimeUnavailable if this build can't."""
    import torch

    dtype = getattr(torch, _DTYPES[precision])
    dev = torch.device(device)
    try:
        conv = torch.nn.Conv2d(3, 4, 3, padding=1).to(dev)
        x = torch.ones(1, 3, 8, 8, device=dev)
        with torch.inference_mode():
            if cast == "half":
                conv.to(dtype)(x.to(dtype))
            else:
                with torch.autocast(dev.type, dtype=dtype):
                    conv(x)
    except Exception as exc:  # noqa: BLE001 - any failure means this precision can't run here
        raise RuntimeUnavailable(
            f"PyTorch {torch.__version__} cannot run {precision} convolutions on {device} "
            f"({type(exc).__name__}: {exc})") from exc
