"""A rank blocked for good (as in a collective whose peer died under NCCL) is stopped by the watchdog.

Two independent processes, as on two nodes with no launcher to kill the survivor: rank 1 raises, rank 0
sleeps as if stuck in a collective. Rank 0 must exit 1 within seconds, logging rank 1's error. And a run
that succeeds must not leave the watchdog thread inside a store call as the process exits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from llava_vitsplit.train.launch_env import free_port
from llava_vitsplit.util import rank_failure

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


@pytest.mark.e2e
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


class SlowStore:
    """A store client whose ``check`` blocks the way a TCPStore call does (GIL released, in C++)."""

    def __init__(self) -> None:
        self.entered = threading.Event()

    def check(self, keys):
        self.entered.set()
        time.sleep(0.5)
        return False


def test_a_finished_run_leaves_no_watchdog_inside_a_store_call(monkeypatch):
    """When the run returns, the watchdog thread has ended: a daemon thread still in a store call while
    the interpreter finalizes can abort the process (``std::terminate``)."""
    store = SlowStore()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setattr(rank_failure, "connect_store", lambda: store)
    monkeypatch.setattr(rank_failure.FailureWatchdog.__init__, "__defaults__", (0.01, 30.0))  # poll often
    before = set(threading.enumerate())

    def run() -> str:
        assert store.entered.wait(10)  # return while the watchdog is inside ``check``
        return "done"

    assert rank_failure.stopping_every_rank_on_failure(run) == "done"
    left = [t for t in set(threading.enumerate()) - before if t.name == "llava-vitsplit-failure-watchdog"]
    assert not any(t.is_alive() for t in left)
