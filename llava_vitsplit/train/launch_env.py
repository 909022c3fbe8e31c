"""The environment that runs the training scripts as one process without a launcher.

DeepSpeed and the Trainer read the rank layout from the environment; ``LAUNCHER`` replaces the
``deepspeed`` launcher of ``scripts/common.sh`` with the current interpreter. Used by the quickstart and
the script tests.
"""

from __future__ import annotations

import socket
import sys

# GLIBC_TUNABLES for CPU training: glibc keeps freed memory in the process (no mmap for large blocks, no
# heap trimming) instead of handing every step's large activation blocks back to the kernel and
# page-faulting them in again on the next step, as PyTorch's caching allocator does on a GPU.
KEEP_FREED_MEMORY = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for ``MASTER_PORT``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ``LAUNCHER`` for one process started by this interpreter (``scripts/common.sh`` appends the module).
PYTHON_MODULE_LAUNCHER = f"{sys.executable} -m"


def single_process_env() -> dict[str, str]:
    """Rank 0 of a world of 1 on a fresh local port, launched with ``python -m``."""
    return {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "LAUNCHER": PYTHON_MODULE_LAUNCHER,
    }


# The variables a launcher sets for a distributed run (torch.distributed's env:// rendezvous).
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def plain_process_env(caller: dict[str, str]) -> dict[str, str]:
    """``caller`` for one plain-PyTorch process (no DeepSpeed) launched with ``python -m``, without rank
    variables. With ``RANK``/``WORLD_SIZE`` set, accelerate starts a gloo process group of one and the
    Trainer wraps the model in DistributedDataParallel (``find_unused_parameters=True`` without gradient
    checkpointing): a graph traversal and a copy of every gradient into DDP's buckets on each step, for
    nothing to reduce."""
    env = {name: value for name, value in caller.items() if name not in RANK_VARIABLES}
    env["LAUNCHER"] = PYTHON_MODULE_LAUNCHER
    return env
