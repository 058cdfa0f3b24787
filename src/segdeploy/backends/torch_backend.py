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
    mode ("eager" | "compile" | "cudagraphs"): how the module runs (default eager).
        compile: ``torch.compile(dynamic=False)`` — one static graph per input shape, the
            recompile limit raised to ``recompile_limit`` (default 64) so that a batch sweep does
            not fall back to eager; batches are padded up to a bucket of ``batch_buckets`` (default
            1, 2, 4, ..., 64 in compile mode) so a ragged last batch reuses a compiled shape (rows are
            independent in eval mode, the padding rows are dropped). Compilation happens in
            ``warmup`` (outside any timing). If compiling fails, the runtime runs the eager module
            and ``describe()["compile_fallback"]`` says why; more shapes than the recompile limit
            are recorded there too (dynamo runs those eagerly).
        cudagraphs: CUDA only: capture one CUDA graph per input shape and replay it (removes
            kernel-launch overhead at small batches); at most ``max_graphs`` (default 8) are kept,
            least recently used evicted first (each holds its own memory pool).
    compile (bool), cuda_graph (bool): older spellings of mode="compile" / mode="cudagraphs".
    compile_mode (str): ``torch.compile`` mode; default "max-autotune-no-cudagraphs" on CUDA (the
        graphs are ours, bounded, in cudagraphs mode), PyTorch's default mode on the CPU.
    channels_last (bool): NHWC memory format for module and input (faster convolutions on CUDA
        tensor cores and on oneDNN CPU kernels).
    cast ("autocast" | "half"): how fp16/bf16 is applied, see above.
    (precision "tf32": CUDA only: TF32 tensor-core convolutions and matmuls, flags scoped to this
        runtime's calls; precision "fp32" on CUDA keeps them off, so fp32 stays IEEE fp32.)
    threads (int): CPU intra-op threads (``torch.set_num_threads``, process-wide); default: leave
        PyTorch's choice.
    device_preprocess (bool): preprocess uint8 photos (and decode 8-bit saliency masks) with torch
        operations on the runtime's device (:mod:`segdeploy.backends.torch_preprocess`, used by the
        pipeline through :meth:`TorchRuntime.run_images`). Default: on for CUDA, off on the CPU, whose
        host path reproduces the upstream libraries bit for bit.
    cudnn_benchmark (bool): CUDA only: let cuDNN time its algorithms per new input shape, set
        around this runtime's calls only (not process-wide). Default: on for models with a fixed
        input size, off for native-size models (every photo size would be re-tuned).

On CUDA, ``run`` copies the batch through pinned, double-buffered staging buffers with
non-blocking copies on a side stream (:class:`segdeploy.backends.torch_cuda.Staging`) and copies
back only the outputs asked for.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Sequence

import numpy as np

from segdeploy.backends import torch_preprocess
from segdeploy.backends.base import Runtime, RuntimeUnavailable, register_runtime
from segdeploy.backends.torch_cuda import GraphCache, Staging, batch_bucket

_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}
MODES = ("eager", "compile", "cudagraphs")
DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def resolve_mode(options: dict[str, Any]) -> str:
    """The run mode from ``mode`` or its older boolean spellings (``compile``, ``cuda_graph``)."""
    mode = options.get("mode")
    if mode is None:
        mode = "compile" if options.get("compile") else "cudagraphs" if options.get("cuda_graph") else "eager"
    if mode not in MODES:
        raise ValueError(f"torch mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


@register_runtime
class TorchRuntime(Runtime):
    name = "torch"
    library = "torch"
    precisions = ("fp32", "tf32", "fp16", "bf16")
    consumes = "module"
    reads = ()
    devices = ("cpu", "cuda")
    auto_candidates = {"cpu": (("fp32", None),), "cuda": (("fp32", None), ("fp16", None), ("bf16", None))}
    preference = 90  # last in the static choice on a CPU: the ONNX engines run the same graph faster
    option_names = ("mode", "channels_last", "compile", "compile_mode", "cuda_graph", "cast", "threads",
                    "cudnn_benchmark", "max_graphs", "batch_buckets", "recompile_limit", "device_preprocess")

    @classmethod
    def unavailable_reason(cls) -> str:
        return "PyTorch is not installed (pip install torch)"

    @classmethod
    def auto_options(cls, device: str = "cpu", threads: int | None = None, *, spec=None,
                     precision: str | None = None) -> dict[str, Any]:
        """On CUDA: cast whole to fp16 / bf16, channels_last, compiled within the budget of
        :mod:`segdeploy.backends.auto_cuda`; on the CPU: the module as built."""
        if not str(device).startswith("cuda"):
            return {}
        from segdeploy.backends.auto_cuda import cuda_options

        return cuda_options(spec, precision)

    @classmethod
    def modifies_module(cls, device: str, precision: str, options: dict[str, Any]) -> bool:
        return bool(device != "cpu" or options.get("channels_last") or
                    (precision in ("fp16", "bf16") and options.get("cast") == "half"))

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
        mode = resolve_mode(options)
        if not cuda and mode == "cudagraphs":
            raise RuntimeUnavailable("torch mode cudagraphs needs device='cuda'")
        if options.get("cast", "autocast") not in ("autocast", "half"):
            raise ValueError(f"cast must be 'autocast' or 'half', got {options.get('cast')!r}")
        if int(options.get("max_graphs", 8)) < 1:
            raise ValueError("max_graphs must be >= 1")
        if precision == "tf32" and not cuda:
            raise RuntimeUnavailable("tf32 is a CUDA precision (TensorFloat-32 on Ampere and newer); on the CPU "
                                     "use fp32")
        if precision in _DTYPES:
            _probe_low_precision(device, precision, options.get("cast", "autocast"))

    def __init__(self, spec, device: str = "cpu", precision: str = "fp32", **options: Any):
        super().__init__(spec, device, precision, **options)
        self.cast = options.get("cast", "autocast")
        self.channels_last = bool(options.get("channels_last", False))
        self.mode = resolve_mode(options)
        self.compiled = self.mode == "compile"
        self.cuda_graph = self.mode == "cudagraphs"
        cuda = str(device).startswith("cuda")
        self.compile_mode = options.get("compile_mode") or ("max-autotune-no-cudagraphs" if cuda else None)
        self.recompile_limit = int(options.get("recompile_limit", 64))
        buckets = options.get("batch_buckets", DEFAULT_BUCKETS if self.compiled else None)
        self.batch_buckets = tuple(int(b) for b in buckets) if buckets else None
        self.threads = options.get("threads")
        self.device_preprocess = options.get("device_preprocess")
        # fp32 on CUDA is fp32: TF32 (10-bit mantissa) tensor cores only when precision="tf32"; the
        # cuDNN and matmul flags are scoped to each call, never left set for the process.
        self.tf32 = precision == "tf32"
        fixed_size = spec.preprocess.size is not None
        self.cudnn_benchmark = bool(options.get("cudnn_benchmark", fixed_size))
        self.model = None
        self._module = None
        self._eager = None
        self.compile_fallback: str | None = None
        self.compile_seconds: dict[str, float] = {}
        self._graphs = GraphCache(int(options.get("max_graphs", 8)))
        self.staging: Staging | None = None

    def load(self, artifact) -> "TorchRuntime":
        import torch

        if not isinstance(artifact, torch.nn.Module):
            raise TypeError(f"torch runtime loads an nn.Module, got {type(artifact).__name__}")
        if self.threads:
            torch.set_num_threads(int(self.threads))
        self.torch = torch
        self.device_obj = torch.device(self.device)
        cuda = self.device_obj.type == "cuda"
        module = artifact.eval().to(self.device_obj)
        if self.precision in _DTYPES and self.cast == "half":
            module = module.to(getattr(torch, _DTYPES[self.precision]))
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.model = artifact
        self._eager = self._module = module
        if self.compiled:
            # One static graph per bucketed shape; without a raised limit dynamo stops compiling
            # after 8 shapes and silently runs the rest eagerly.
            for knob in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                         "accumulated_recompile_limit"):
                if hasattr(torch._dynamo.config, knob):
                    setattr(torch._dynamo.config, knob, max(getattr(torch._dynamo.config, knob), self.recompile_limit))
            kwargs: dict[str, Any] = {"dynamic": False}
            if self.compile_mode:
                kwargs["mode"] = self.compile_mode
            self._module = torch.compile(module, **kwargs)
        self.staging = Staging(torch, self.device_obj, cuda)
        self.loaded = True
        return self

    # -- execution ----------------------------------------------------------------------------
    def _context(self):
        """inference mode + autocast + (CUDA) cuDNN flags scoped to this call, not the process."""
        torch = self.torch
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.precision in _DTYPES and self.cast == "autocast":
            # The autocast weight-cast cache must be off while a CUDA graph is captured (the cached
            # copies would be freed under the graph).
            stack.enter_context(torch.autocast(self.device_obj.type, dtype=getattr(torch, _DTYPES[self.precision]),
                                               cache_enabled=not self.cuda_graph))
        if self.device_obj.type == "cuda":
            stack.enter_context(torch.backends.cudnn.flags(
                enabled=True, benchmark=self.cudnn_benchmark, deterministic=torch.backends.cudnn.deterministic,
                allow_tf32=self.tf32))
        return stack

    def _prepare(self, x):
        torch = self.torch
        if self.precision in _DTYPES and self.cast == "half":
            x = x.to(getattr(torch, _DTYPES[self.precision]))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _call(self, module, x) -> list:
        matmul = contextlib.nullcontext()
        if self.device_obj.type == "cuda" and self.precision in ("fp32", "tf32"):
            matmul = _matmul_tf32(self.torch, self.tf32)
        with self._context(), matmul:
            out = module(self._prepare(x))
        outputs = list(out) if isinstance(out, (tuple, list)) else [out]
        if len(outputs) != len(self.spec.output_names):
            raise RuntimeError(f"{self.spec.name}: the module returned {len(outputs)} outputs, the spec names "
                               f"{len(self.spec.output_names)} ({', '.join(self.spec.output_names)})")
        return outputs

    def _forward(self, x) -> list:
        if not self.compiled or self.compile_fallback is not None:
            return self._call(self._eager, x)
        key = "x".join(str(d) for d in x.shape)
        first = key not in self.compile_seconds
        t0 = time.perf_counter()
        try:
            outputs = self._call(self._module, x)
        except Exception as exc:  # noqa: BLE001 - inductor/dynamo failures: run eager, say so
            self.compile_fallback = f"torch.compile failed for shape {key}: {type(exc).__name__}: {str(exc)[:200]}"
            return self._call(self._eager, x)
        if first:
            self.compile_seconds[key] = round(time.perf_counter() - t0, 3)
            if len(self.compile_seconds) > self.recompile_limit:
                self.compile_fallback = (f"more input shapes ({len(self.compile_seconds)}) than the recompile limit "
                                         f"({self.recompile_limit}): dynamo runs the new ones eagerly")
        return outputs

    def _graph_forward(self, x) -> list:
        """Replay (capturing on first use) the CUDA graph for this input shape (bounded LRU cache)."""
        torch = self.torch
        key = tuple(x.shape)
        entry = self._graphs.get(key)
        if entry is None:
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
            entry = (graph, static_in, static_out)
            self._graphs.put(key, entry)
        graph, static_in, static_out = entry
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

    def run(self, batch: np.ndarray, outputs: Sequence[int] | None = None) -> list[np.ndarray]:
        batch = self._check_batch(batch)
        indices = self._output_indices(outputs)
        rows = batch.shape[0]
        bucket = batch_bucket(rows, self.batch_buckets)
        if bucket != rows:
            padded = np.zeros((bucket, *batch.shape[1:]), dtype=np.float32)
            padded[:rows] = batch
            batch = padded
        if self.device_obj.type == "cuda":
            x = self.staging.to_device(batch)
        else:
            x = self.torch.from_numpy(batch)
        results = self.run_device(x)
        selected = [results[i][:rows] for i in indices]
        return self.staging.to_host(selected)

    def device_preprocessing(self, spec=None) -> str | None:
        """What :meth:`run_images` does on the device for ``spec``: None (nothing: give float inputs to
        :meth:`run`), "input" (preprocessing) or "mask" (preprocessing and 8-bit mask decoding)."""
        spec = spec or self.spec
        wanted = self.device_preprocess
        if wanted is None:  # by default on CUDA only: on the CPU the host path is the exact one
            wanted = str(self.device).startswith("cuda")
        if not wanted or not torch_preprocess.supports_preprocessing(spec):
            return None
        return "mask" if torch_preprocess.supports_mask_decoding(spec) else "input"

    def run_images(self, images: np.ndarray, original_hw: tuple[int, int] | None = None,
                   outputs: Sequence[int] | None = None) -> list[np.ndarray]:
        """NHWC uint8 photos of one size, preprocessed on the device, then run.

        Returns the selected outputs as :meth:`run` does, or, with ``original_hw`` (when
        :meth:`device_preprocessing` says "mask"), one uint8 (N, H, W) array of masks at that size.
        """
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise ValueError(f"run_images expects NHWC uint8 RGB photos, got {images.dtype} {images.shape}")
        torch = self.torch
        rows = images.shape[0]
        bucket = batch_bucket(rows, self.batch_buckets)
        if bucket != rows:
            images = np.concatenate([images, np.zeros((bucket - rows, *images.shape[1:]), np.uint8)])
        cuda = self.device_obj.type == "cuda"
        photos = self.staging.to_device(images) if cuda else torch.from_numpy(images)
        with torch.inference_mode():
            x = torch_preprocess.preprocess_on_device(torch, photos, self.spec)
        results = self.run_device(x)
        if original_hw is not None:
            with torch.inference_mode():
                masks = torch_preprocess.decode_masks_on_device(
                    torch, results[self.spec.decode.output_index][:rows], *original_hw)
            return self.staging.to_host([masks], keep_dtype=True)
        return self.staging.to_host([results[i][:rows] for i in self._output_indices(outputs)])

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
            "mode": self.mode,
            "channels_last": self.channels_last,
            "compile": self.compiled,
            "compile_mode": self.compile_mode if self.compiled else None,
            "compile_fallback": self.compile_fallback,
            "compiled_shapes": dict(self.compile_seconds) if self.compiled else None,
            "batch_buckets": list(self.batch_buckets) if self.batch_buckets else None,
            "cuda_graph": self.cuda_graph,
            "device_preprocessing": self.device_preprocessing(),
            "threads": torch.get_num_threads(),
        }
        if self.cuda_graph:
            info.update(graphs_cached=len(self._graphs), graph_cache_capacity=self._graphs.capacity,
                        graph_evictions=self._graphs.evictions)
        if cuda:
            info.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                        cudnn_benchmark=self.cudnn_benchmark, tf32=self.tf32,
                        staging=self.staging.describe() if self.staging else None)
        record = getattr(self.model, "segdeploy_weights", None)
        if record is not None:
            info["weights"] = record.to_dict()
        return info


@contextlib.contextmanager
def _matmul_tf32(torch, allow: bool):
    """Scope ``torch.backends.cuda.matmul.allow_tf32`` to one call (restored afterwards)."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


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
