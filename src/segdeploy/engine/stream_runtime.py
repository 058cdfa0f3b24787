"""How the streaming loop (:mod:`segdeploy.engine.pipeline`) calls the runtime.

Which outputs and which device preprocessing it asks for, the one-item-at-a-time retry of a batch
that failed, and which runtime errors end a run (a poisoned device) or name an allocation failure.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

import numpy as np

from segdeploy.core.specs import ModelSpec
from segdeploy.engine.inference_threads import InferenceThreads, calls_in_flight
from segdeploy.engine.stream_parts import Prepared

if TYPE_CHECKING:
    from segdeploy.engine.pipeline import StageTimes

#: messages of device errors that poison the CUDA context: every later call fails too, so retrying
#: item by item would only repeat the error for each remaining input
_STICKY_DEVICE_ERRORS = ("CUDA error", "device-side assert", "illegal memory access", "CUBLAS_STATUS_EXECUTION_FAILED",
                         "cudaErrorLaunchFailure", "unspecified launch failure")

#: what one item of a batch came back as: its outputs (no batch axis), or the runtime's error
ItemResult = tuple[Prepared, list[np.ndarray] | BaseException]


def is_sticky_device_error(exc: BaseException) -> bool:
    """True for a device error after which the device cannot run anything (the run must stop)."""
    text = f"{type(exc).__name__}: {exc}"
    return any(marker in text for marker in _STICKY_DEVICE_ERRORS)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a device (or host) allocation failure of the runtime."""
    text = f"{type(exc).__name__}: {exc}"
    return isinstance(exc, MemoryError) or "OutOfMemoryError" in text or "out of memory" in text.lower()


def run_parameters(runtime) -> set[str]:
    """Parameter names of ``runtime.run`` (empty when they cannot be read)."""
    import inspect

    try:
        return set(inspect.signature(runtime.run).parameters)
    except (TypeError, ValueError):
        return set()


class BatchRunner:
    """Calls ``runtime`` on batches of prepared items, in daemon threads (interruptible waits).

    Attributes:
        wanted: the output indices asked for (None = all): only the one decoding reads, when the
            runtime takes ``outputs=`` and the caller keeps no raw outputs.
        device_mode: how the runtime preprocesses on its device (None: it takes network inputs;
            "input": it takes the photos as decoded; "mask": it also returns the 8-bit mask).
        concurrency: calls the runtime takes at once (OpenVINO streams).
        threads: the inference threads, ``concurrency`` of them.
    """

    def __init__(self, runtime, spec: ModelSpec, keep_outputs: bool, times: StageTimes) -> None:
        self.runtime = runtime
        self.times = times
        self.wanted: tuple[int, ...] | None = None
        if len(spec.output_names) > 1 and not keep_outputs and "outputs" in run_parameters(runtime):
            self.wanted = (int(spec.decode.output_index),)
        self.device_mode = getattr(runtime, "device_preprocessing", lambda spec: None)(spec)
        if keep_outputs and self.device_mode == "mask":
            self.device_mode = "input"  # the raw outputs are wanted, so the mask is decoded here
        self.concurrency = calls_in_flight(runtime)
        self.threads = InferenceThreads(self.concurrency)

    def run_direct(self, x: np.ndarray, mask_hw: tuple[int, int] | None = None) -> list[np.ndarray]:
        """One runtime call in the calling thread."""
        if self.device_mode:
            return self.runtime.run_images(x, original_hw=mask_hw, outputs=self.wanted)
        return self.runtime.run(x) if self.wanted is None else self.runtime.run(x, outputs=self.wanted)

    def run_in_thread(self, x: np.ndarray, mask_hw: tuple[int, int] | None = None) -> list[np.ndarray]:
        """One runtime call in an inference thread, waited for interruptibly."""
        return self.threads.call(self.run_direct, x, mask_hw)

    def infer(self, batch: list[Prepared], run: Callable | None = None) -> list[ItemResult]:
        """Run ``batch``; each item with its outputs, or with the error of its own one-item run.

        A batch that fails as a whole is retried one item at a time, so that only the item(s) at
        fault are lost. A sticky device error ends the run (InferenceError) instead.

        Args:
            batch: items of one input shape.
            run: how a call is made (default :meth:`run_in_thread`; :meth:`run_direct` from an
                inference thread).
        """
        run = run or self.run_in_thread
        t0 = time.perf_counter()
        # Masks come back decoded when every photo of the batch is at its original size.
        mask_hw = batch[0].original_hw if self.device_mode == "mask" and all(
            p.original_hw == p.image.shape[:2] for p in batch) else None
        try:
            outputs = run(np.stack([p.array for p in batch]), mask_hw)
            self.times.add("batches", 1)
            self.times.batch_sizes.append(len(batch))
            if mask_hw is not None:
                for i, p in enumerate(batch):
                    p.device_mask = outputs[0][i]
                return [(p, []) for p in batch]
            return [(p, [np.asarray(o[i]) for o in outputs]) for i, p in enumerate(batch)]
        except Exception as exc:
            if is_sticky_device_error(exc):
                from segdeploy.core.errors import InferenceError

                raise InferenceError(f"the device failed and cannot run further inputs ({exc}); "
                                     "the run stopped") from exc
            if len(batch) == 1:
                return [(batch[0], exc)]
        finally:
            self.times.add("infer", time.perf_counter() - t0)
        results = []
        for p in batch:
            results.extend(self.infer([p], run))
        return results


__all__ = ["BatchRunner", "ItemResult", "is_out_of_memory", "is_sticky_device_error", "run_parameters"]
