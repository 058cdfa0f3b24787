"""The environment a result was produced in: versions, device, command line. Every JSON record has it."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from importlib import metadata

_PACKAGES = ("segdeploy", "numpy", "torch", "onnx", "onnxruntime", "openvino", "onnxslim", "opencv-python-headless",
             "pillow")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: instruction-set extensions that change CPU inference speed several-fold (int8 dot products, bf16)
_CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_features() -> list[str]:
    """Which of :data:`_CPU_FEATURES` this CPU has (Linux; empty elsewhere). Two "AMD EPYC" machines
    differ by 2x in int8 with and without VNNI, so every result names them."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [f for f in _CPU_FEATURES if f in flags]
    except OSError:
        pass
    return []


def gpu_info() -> dict | None:
    """CUDA device facts when torch is already imported and sees a GPU (never imports torch itself)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    info = {
        "name": props.name,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "capability": f"{props.major}.{props.minor}",
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }
    try:
        import subprocess

        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit",
             "--format=csv,noheader", f"--id={index}"], capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            driver, sm, sm_max, mem, power = [s.strip() for s in out.stdout.split(",")]
            info.update(driver=driver, sm_clock=sm, sm_clock_max=sm_max, mem_clock=mem, power_limit=power)
    except (OSError, ValueError, Exception):  # nvidia-smi missing or unexpected output
        pass
    return info


def environment() -> dict:
    """A JSON-ready description of where and how this process runs."""
    return {
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]) if sys.argv else "",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_features": cpu_features(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu_info(),
        "packages": {name: _version(name) for name in _PACKAGES},
    }
