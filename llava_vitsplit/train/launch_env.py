"""The environment that runs the training scripts as one process without a launcher.

DeepSpeed and the Trainer read the rank layout from the environment; ``LAUNCHER`` replaces the
``deepspeed`` launcher of ``scripts/common.sh`` with the current interpreter. Used by the quickstart and
the script tests.
"""

from __future__ import annotations

import socket
import sys


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for ``MASTER_PORT``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process_env() -> dict[str, str]:
    """Rank 0 of a world of 1 on a fresh local port, launched with ``python -m``."""
    return {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "LAUNCHER": f"{sys.executable} -m",
    }
