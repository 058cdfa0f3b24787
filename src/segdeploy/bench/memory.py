"""Host and device probes of the harness: peak RSS, the CUDA side (synchronise, memory, copies,
events) and the table of per-device compute limits."""

from __future__ import annotations

import sys


import numpy as np

from segdeploy.bench.timing import percentile

#: Dense matrix-product ceilings, TFLOP/s, by a substring of the CUDA device name (first match
#: wins, so longer names come first). "measured": docs/performance.md §2 on one H100 80GB HBM3;
#: "datasheet": the vendor's dense (no sparsity) tensor-core figure, an upper bound that a
#: measured ceiling is usually 80-85 % of.
DEVICE_LIMITS: tuple[tuple[str, dict[str, float], str], ...] = (
    ("H100 PCIe", {"fp16": 756.0, "bf16": 756.0, "tf32": 378.0}, "datasheet"),
    ("H100", {"fp16": 810.0, "bf16": 804.0, "tf32": 494.0}, "measured fp16/bf16 (docs/performance.md §2); tf32 datasheet"),
    ("H200", {"fp16": 989.0, "bf16": 989.0, "tf32": 494.0}, "datasheet (SXM)"),
    ("GH200", {"fp16": 989.0, "bf16": 989.0, "tf32": 494.0}, "datasheet"),
    ("B200", {"fp16": 2250.0, "bf16": 2250.0, "tf32": 1100.0}, "datasheet"),
    ("A100", {"fp16": 312.0, "bf16": 312.0, "tf32": 156.0}, "datasheet"),
    ("L40S", {"fp16": 362.0, "bf16": 362.0, "tf32": 183.0}, "datasheet"),
    ("L4", {"fp16": 121.0, "bf16": 121.0, "tf32": 60.0}, "datasheet"),
    ("A10", {"fp16": 125.0, "bf16": 125.0, "tf32": 62.5}, "datasheet"),
    ("T4", {"fp16": 65.0}, "datasheet"),
)

def device_limit(device_name: str | None, precision: str) -> tuple[float, str] | None:
    """(TFLOP/s, source) of ``device_name`` at ``precision`` (fp32 on CUDA counts as tf32 only when
    asked for as "tf32"), or None when the device or precision is not in :data:`DEVICE_LIMITS`."""
    if not device_name:
        return None
    for key, limits, source in DEVICE_LIMITS:
        if key in device_name:
            return (limits[precision], f"{key}: {source}") if precision in limits else None
    return None


# ----------------------------------------------------------------------------------------------
# Host and device probes
# ----------------------------------------------------------------------------------------------


def _read_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_host_peak() -> bool:
    """Reset this process's peak RSS (Linux >= 4.0: write "5" to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def host_peak_rss_bytes() -> int | None:
    """Peak resident set size of this process in bytes (VmHWM; else getrusage ru_maxrss)."""
    kib = _read_status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    try:
        import resource

        # ru_maxrss is KiB on Linux, bytes on macOS.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)
    except (ImportError, OSError):
        return None


class CudaCounters:
    """The CUDA side of the harness: synchronise, memory counters, copy probes, events."""

    def __init__(self, device: str):
        import torch

        if not torch.cuda.is_available():
            raise _unavailable(f"device {device!r} requested but torch sees no CUDA device")
        self.torch = torch
        self.device = torch.device(device)
        if self.device.index is not None:
            torch.cuda.set_device(self.device)

    def sync(self) -> None:
        self.torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        self.torch.cuda.reset_peak_memory_stats(self.device)

    def peaks(self) -> tuple[int, int, int]:
        free, total = self.torch.cuda.mem_get_info(self.device)
        return (
            int(self.torch.cuda.max_memory_allocated(self.device)),
            int(self.torch.cuda.max_memory_reserved(self.device)),
            int(total - free),
        )

    def timer(self):
        from segdeploy.bench.timing import CudaEventTimer

        return CudaEventTimer()

    def copy_ms(self, nbytes: int, direction: str, reps: int = 10) -> float:
        """Median ms of copying ``nbytes`` between pinned host memory and the device."""
        torch = self.torch
        if nbytes <= 0:
            return 0.0
        host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        dev = torch.empty(nbytes, dtype=torch.uint8, device=self.device)
        samples = []
        for _ in range(reps + 1):
            timer = self.timer()
            timer.start()
            if direction == "h2d":
                dev.copy_(host, non_blocking=True)
            else:
                host.copy_(dev, non_blocking=True)
            timer.stop()
            samples.append(timer.elapsed_s())
        del host, dev
        return 1e3 * percentile(samples[1:], 0.5)

    def to_device(self, array: np.ndarray):
        return self.torch.from_numpy(array).to(self.device)


def _unavailable(message: str) -> Exception:
    try:
        from segdeploy.backends import RuntimeUnavailable

        return RuntimeUnavailable(message)
    except Exception:  # noqa: BLE001 - runtimes package not importable: plain error
        return RuntimeError(message)


