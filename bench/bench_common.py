"""Shared helpers of the benchmark scripts: compute dtype by hardware, memory readings, machine line.

``resolve_dtype("auto", device)`` picks bfloat16 where the hardware computes it natively (a CUDA GPU with
bf16 support; a CPU whose flags list ``avx512_bf16`` or ``amx_bf16``) and float32 otherwise (AVX2-only
CPUs emulate bf16 matmuls, slower than fp32). Scripts record which one ran.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time

from llava_vitsplit.train.launch_env import KEEP_FREED_MEMORY
from llava_vitsplit.util.cpu_precision import NATIVE_BF16_CPU_FLAGS, cpu_flags, cpu_precision

DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# Child-process memory allocator settings (``--malloc``). ``system``: glibc's defaults, which hand large
# blocks back to the kernel on free, so every step page-faults its large activations in again (about
# 15% of a CPU training step on the project's VMs). ``keep``: glibc keeps freed memory in the process
# (no mmap for large blocks, no heap trimming), as PyTorch's CUDA caching allocator does on a GPU.
MALLOC_TUNABLES = {
    "system": None,
    "keep": KEEP_FREED_MEMORY,
}


def cpu_native_bf16() -> bool:
    """The package's decision (``llava_vitsplit.util.cpu_precision``): native bf16 flags listed."""
    return cpu_precision().bf16


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


def timed(fn, cuda: bool = False) -> float:
    """Wall time of ``fn()`` in seconds (CUDA work synchronised before and after)."""
    import torch

    if cuda:
        torch.cuda.synchronize()
    tic = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - tic


_CPU_ATTENTION_FORMULAS = []  # registered once per process


def register_cpu_attention_flops() -> None:
    """FLOP formulas for the CPU flash-attention kernels SDPA runs on the CPU (torch's counter lacks them)."""
    if _CPU_ATTENTION_FORMULAS:
        return
    import torch
    from torch.utils.flop_counter import register_flop_formula, sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
    def _attention(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(q_shape, k_shape, v_shape)

    @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def _attention_backward(grad_shape, q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_shape, q_shape, k_shape, v_shape)

    _CPU_ATTENTION_FORMULAS.extend([_attention, _attention_backward])


def count_gflops(fn) -> float:
    """GFLOP that ``fn()`` runs (matmuls, convolutions, attention; torch's FLOP counter): the one model-FLOP
    count of every benchmark (the GPU suite's MFU, the CPU training benchmark's MFU)."""
    from torch.utils.flop_counter import FlopCounterMode

    register_cpu_attention_flops()
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


class StepBench:
    """One variant's training step inside its own process: timing, FLOP count, profile, peak memory.

    ``step`` runs one full training step; ``info`` goes into the results as is; ``extra`` (optional)
    is called once at the end and its dict merged into the results (e.g. a component's own time).
    """

    def __init__(self, step, device: str, info: dict, extra=None) -> None:
        import torch

        self.step, self.device, self.info, self.extra = step, device, info, extra
        self.cuda = device.startswith("cuda")
        self.built_rss = rss_mib()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def timed(self) -> float:
        return timed(self.step, self.cuda)

    def gflops(self) -> float:
        """GFLOP of one step (matmuls, convolutions, attention; forward + backward)."""
        return count_gflops(self.step)

    def profile(self, rows: int) -> str:
        """torch.profiler's per-operator table of one step, top ``rows`` by self time."""
        import torch
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        with profile(activities=activities) as prof:
            self.step()
            if self.cuda:
                torch.cuda.synchronize()
        key = "self_cuda_time_total" if self.cuda else "self_cpu_time_total"
        return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=48)

    def live_peak_mib(self) -> float:
        """Peak of live tensor memory during one step above its start (MiB), from torch.profiler's memory
        events at operator granularity: the CPU analogue of ``torch.cuda.max_memory_allocated`` (weights and
        optimiser state, allocated before the step, are not counted; allocator caching is not either)."""
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            self.step()
        changes = sorted(
            (e.time_range.start, e.self_cpu_memory_usage) for e in prof.events() if e.self_cpu_memory_usage
        )
        live = peak = 0
        for _, nbytes in changes:
            live += nbytes
            peak = max(peak, live)
        return peak / 2**20

    def finish(self) -> dict:
        import torch

        out = dict(self.extra() if self.extra else {})
        peak = peak_rss_mib()
        out |= {"peak_rss_mib": peak, "train_rss_increase_mib": peak - self.built_rss}
        if self.cuda:
            out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        return out


def serve(build, variant: str, settings: dict, conn) -> None:
    """Child process: ``build(variant, settings) -> StepBench``, then answer the parent's requests."""
    if settings.get("threads"):
        import torch

        torch.set_num_threads(settings["threads"])
    bench = build(variant, settings)
    conn.send(bench.info)
    while (request := conn.recv()) != "finish":
        name, _, arg = request.partition(":")
        if name == "step":
            conn.send(bench.timed())
        elif name == "flops":
            conn.send(bench.gflops())
        elif name == "profile":
            conn.send(bench.profile(int(arg)))
        elif name == "live":
            conn.send(bench.live_peak_mib())
    conn.send(bench.finish())


def _ask(conn, request: str):
    conn.send(request)
    return conn.recv()


def run_interleaved(
    build, variants, settings: dict, warmup: int, iters: int, profile_rows: int = 0, live_peak: bool = False
) -> dict[str, dict]:
    """One child per variant; round ``r`` times one step of each (order reversed every other round).

    Load from other jobs on a shared machine thus falls on all variants alike. The first warm-up step
    of each variant counts its FLOPs. Returns per variant: ``info``, ``gflops_per_step``,
    ``step_times``, ``median_s``, memory figures and anything ``extra`` measured (and ``profile``;
    with ``live_peak``, ``live_peak_mib`` of one more step: ``StepBench.live_peak_mib``).
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    tunables = MALLOC_TUNABLES[settings.get("malloc", "system")]
    caller_tunables = os.environ.get("GLIBC_TUNABLES")
    if tunables:  # read by glibc when each spawned child starts
        os.environ["GLIBC_TUNABLES"] = tunables
    conns, procs = {}, []
    for variant in variants:
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(target=serve, args=(build, variant, settings, child_end), daemon=True)
        proc.start()
        conns[variant] = parent_end
        procs.append(proc)
    results = {v: {"variant": v, **conns[v].recv()} for v in variants}
    for v in variants:
        results[v]["gflops_per_step"] = _ask(conns[v], "flops")
        for _ in range(warmup - 1):
            _ask(conns[v], "step")
        results[v]["step_times"] = []
    for r in range(iters):
        for v in variants if r % 2 == 0 else list(reversed(variants)):
            results[v]["step_times"].append(_ask(conns[v], "step"))
    for v in variants:
        if profile_rows:
            results[v]["profile"] = _ask(conns[v], f"profile:{profile_rows}")
        if live_peak:
            results[v]["live_peak_mib"] = _ask(conns[v], "live")
        results[v] |= _ask(conns[v], "finish")
        results[v]["median_s"] = statistics.median(results[v]["step_times"])
    for proc in procs:
        proc.join()
    if tunables:  # the caller's setting back
        os.environ.pop("GLIBC_TUNABLES", None)
        if caller_tunables is not None:
            os.environ["GLIBC_TUNABLES"] = caller_tunables
    return results


def write_json(path, data) -> None:
    """Write ``data`` as JSON atomically (the project's one atomic-write helper)."""
    import json
    from pathlib import Path

    from llava_vitsplit.util.atomic import write_atomic

    write_atomic(Path(path), lambda p: p.write_text(json.dumps(data, indent=2)))
