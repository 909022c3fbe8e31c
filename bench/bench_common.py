"""Shared helpers of the benchmark scripts: compute dtype by hardware, memory readings, machine line.

``resolve_dtype("auto", device)`` picks bfloat16 where the hardware computes it natively (a CUDA GPU with
bf16 support; a CPU whose flags list ``avx512_bf16`` or ``amx_bf16``) and float32 otherwise (AVX2-only
CPUs emulate bf16 matmuls, slower than fp32). Scripts record which one ran.
"""

from __future__ import annotations

import os
import platform
import resource

DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where it does not exist)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_native_bf16() -> bool:
    return any(flag in cpu_flags() for flag in NATIVE_BF16_CPU_FLAGS)


def resolve_dtype(name: str, device: str) -> str:
    """``auto`` -> ``bf16`` where native (see module docstring), else ``fp32``; other names unchanged."""
    if name != "auto":
        if name not in DTYPE_NAMES:
            raise ValueError(f"dtype must be auto or one of {sorted(DTYPE_NAMES)}, got {name!r}")
        return name
    if device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_native_bf16() else "fp32"


def torch_dtype(name: str):
    import torch

    return getattr(torch, DTYPE_NAMES[name])


def rss_mib() -> float:
    """Current resident set size of this process (MiB)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine_line(device: str, threads: int | None = None) -> str:
    """One line naming the hardware a figure was measured on."""
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    bf16 = "native bf16 (" + ", ".join(f for f in NATIVE_BF16_CPU_FLAGS if f in cpu_flags()) + ")"
    return (
        f"{platform.machine()} CPU, {os.cpu_count()} cores, {threads or torch.get_num_threads()} torch threads, "
        f"{bf16 if cpu_native_bf16() else 'no native bf16'}, torch {torch.__version__}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
