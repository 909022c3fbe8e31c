"""CPU threads for vLLM's CPU engine: every core this process may run on, unless the user says otherwise.

vLLM 0.32's CPU build binds its model worker's OpenMP threads itself (``VLLM_CPU_OMP_THREADS_BIND``,
default ``auto``). ``auto`` keeps one core per worker for the scheduler process
(``VLLM_CPU_NUM_OF_RESERVED_CPU``): on a 2-core machine the model then runs on one thread while the
transformers engine runs on two. :func:`apply_cpu_threads` binds the worker to every CPU in
``os.sched_getaffinity(0)`` (the cores this process is allowed, which a container or ``taskset`` may
narrow); with an explicit list vLLM reserves none, and its scheduler process shares those cores.

Overridable: a ``VLLM_CPU_OMP_THREADS_BIND`` (``auto``, ``nobind`` or a list such as ``0-3``) or
``VLLM_CPU_NUM_OF_RESERVED_CPU`` already in the environment is kept as it is. The values in effect are
logged. Called by the vLLM plugin in every vLLM process, before vLLM starts its worker.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, MutableMapping

BIND_VARIABLE = "VLLM_CPU_OMP_THREADS_BIND"
RESERVED_VARIABLE = "VLLM_CPU_NUM_OF_RESERVED_CPU"
# Set next to our binding, so vLLM's child processes (which inherit it) log where it came from.
SOURCE_VARIABLE = "LLAVA_VITSPLIT_VLLM_THREADS"
FROM_AFFINITY = "from os.sched_getaffinity"

# A child of vLLM's "vllm" logger, so the line appears in vLLM's own log with its format and level.
logger = logging.getLogger("vllm.llava_vitsplit.threads")
_logged: list[dict[str, str]] = []  # what this process logged (register() runs several times per process)


def cpu_list(cpus: Iterable[int]) -> str:
    """vLLM's CPU-list syntax for ``cpus``: ascending ids, runs as ``a-b`` (``{0, 1, 2, 5}`` -> ``0-2,5``)."""
    ids = sorted(set(cpus))
    if not ids:
        raise ValueError("no CPUs to bind vLLM's threads to")
    runs: list[list[int]] = [[ids[0], ids[0]]]
    for cpu in ids[1:]:
        if cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def cpu_thread_settings(allowed: Iterable[int]) -> dict[str, str]:
    """The environment that binds vLLM's one CPU worker's threads to all of ``allowed``."""
    return {BIND_VARIABLE: cpu_list(allowed), SOURCE_VARIABLE: FROM_AFFINITY}


def apply_cpu_threads(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the thread binding from this machine where the user has not; returns the values in effect."""
    environ = os.environ if environ is None else environ
    user_set = environ.get(SOURCE_VARIABLE) != FROM_AFFINITY and (
        BIND_VARIABLE in environ or RESERVED_VARIABLE in environ
    )
    if not user_set:
        environ.update(cpu_thread_settings(os.sched_getaffinity(0)))
    effective = {name: environ.get(name, "(vLLM default)") for name in (BIND_VARIABLE, RESERVED_VARIABLE)}
    if effective in _logged:
        return effective
    _logged.append(effective)
    logger.info(
        "vLLM CPU threads: %s=%s %s=%s (%s)",
        BIND_VARIABLE,
        effective[BIND_VARIABLE],
        RESERVED_VARIABLE,
        effective[RESERVED_VARIABLE],
        "set by the user" if user_set else f"every CPU this process may use, {FROM_AFFINITY}",
    )
    return effective
