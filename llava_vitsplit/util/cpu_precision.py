"""Which precision CPU training uses: bf16 autocast where the CPU computes bf16 natively, fp32 elsewhere.

A CPU whose flags (``/proc/cpuinfo``) list ``avx512_bf16`` (AVX512-BF16 dot products) or ``amx_bf16``
(Intel AMX tiles) runs bf16 matmuls natively, faster than fp32. Everywhere else (AVX2-only x86, AVX-512
without BF16) PyTorch emulates bf16 by converting to fp32 and back, which is slower than fp32 itself, so
fp32 is the choice there. This module is the one place that decides; the quickstart passes its choice to
the training scripts (``BF16``) and the trainer logs it (:func:`describe`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """The CPU feature flags of ``cpuinfo`` (empty where it does not exist or lists none)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@dataclass(frozen=True)
class CPUPrecision:
    """The CPU training precision and why: ``bf16`` True means bf16 autocast (fp32 weights and optimizer)."""

    bf16: bool
    native_flags: tuple[str, ...]  # the native-bf16 flags this CPU lists (empty: none)

    @property
    def name(self) -> str:
        return "bf16" if self.bf16 else "fp32"

    def describe(self) -> str:
        if self.bf16:
            return f"bf16 autocast (the CPU computes bf16 natively: {', '.join(self.native_flags)})"
        return (
            f"fp32 (the CPU lists none of {', '.join(NATIVE_BF16_CPU_FLAGS)}: bf16 would be emulated, "
            "slower than fp32)"
        )


def cpu_precision(flags: Iterable[str] | None = None) -> CPUPrecision:
    """bf16 autocast where ``flags`` (default: this CPU's) include a native-bf16 flag, else fp32."""
    present = cpu_flags() if flags is None else set(flags)
    native = tuple(flag for flag in NATIVE_BF16_CPU_FLAGS if flag in present)
    return CPUPrecision(bf16=bool(native), native_flags=native)
