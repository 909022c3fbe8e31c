"""A rank blocked for good (as in a collective whose peer died under NCCL) is stopped by the watchdog.

Two independent processes, as on two nodes with no launcher to kill the survivor: rank 1 raises, rank 0
sleeps as if stuck in a collective. Rank 0 must exit 1 within seconds, logging rank 1's error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from llava_vitsplit.train.launch_env import free_port

pytestmark = pytest.mark.e2e

RANK_PROGRAM = """
import logging, sys, time
from datetime import timedelta
import torch.distributed as dist
from llava_vitsplit.util.rank_failure import stopping_every_rank_on_failure
logging.basicConfig(level=logging.INFO, format="%(message)s")
dist.init_process_group("gloo", timeout=timedelta(seconds=600))
def rank0():
    time.sleep(300)  # blocked, like a collective that never returns
def rank1():
    raise RuntimeError("disk on fire")
stopping_every_rank_on_failure(rank0 if dist.get_rank() == 0 else rank1)
"""


def test_a_blocked_rank_is_stopped_with_the_failing_rank_s_error():
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
        env.update(MASTER_PORT=port, LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", RANK_PROGRAM],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    out1, _ = procs[1].communicate(timeout=240)
    failed_at = time.monotonic()
    out0, _ = procs[0].communicate(timeout=120)
    waited = time.monotonic() - failed_at
    assert procs[1].returncode == 1 and procs[0].returncode == 1, (out0.decode(), out1.decode())
    assert "this rank failed, stopping every rank: rank 1 (" in out1.decode()
    assert "stopping: rank 1 (" in out0.decode() and "RuntimeError: disk on fire" in out0.decode()
    assert waited < 30, waited  # polled every 2 s; the sleep would last 300 s
