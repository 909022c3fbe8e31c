"""One rank's failure stops every rank within seconds, each logging the failing rank's error.

Without this, a rank that raises (a failed save, a data-worker exception, an out-of-memory error) exits
while the others wait in their next collective until the process group's timeout (30 minutes by default,
with every GPU reserved); on several nodes no launcher kills them sooner.

- ``report_failure``: the failing rank writes ``rank R (host): <error>`` under ``FAILURE_KEY`` in the
  rendezvous store (the ``torch.distributed.TCPStore`` at ``MASTER_ADDR:MASTER_PORT`` that every rank
  already reached at start-up: torchrun's agent store, or rank 0's).
- ``FailureWatchdog``: a daemon thread on every rank reads that key every ``poll_seconds``; when another
  rank wrote it, it logs "stopping: rank R failed: <error>" and ends this process with exit code 1
  (``os._exit``: the main thread may be blocked inside a collective that never returns). A store that
  stays unreachable for ``lost_store_seconds`` (rank 0 or the launcher is gone) ends it the same way.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from datetime import timedelta

import torch.distributed as dist

logger = logging.getLogger(__name__)

FAILURE_KEY = "llava_vitsplit/failed_rank"
EXIT_FAILED = 1


def _store_key() -> str:
    return f"{FAILURE_KEY}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"  # one per torchrun restart


def connect_store(timeout_s: float = 10.0):
    """A client of the rendezvous store, or None outside a multi-process launch."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "MASTER_ADDR" not in os.environ:
        return None
    return dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        is_master=False,
        timeout=timedelta(seconds=timeout_s),
        wait_for_workers=False,
    )


def report_failure(err: BaseException) -> None:
    """Log ``err`` as this rank's failure and publish it for the other ranks (best effort)."""
    rank = os.environ.get("RANK", "0")
    message = f"rank {rank} ({socket.gethostname()}): {type(err).__name__}: {err}"
    logger.error("this rank failed, stopping every rank: %s", message)
    try:
        store = connect_store()
        if store is not None:
            store.compare_set(_store_key(), "", message)  # the first failure wins
    except Exception as store_err:  # the store host may be this very failure
        logger.error("could not tell the other ranks (%s)", store_err)


class FailureWatchdog(threading.Thread):
    def __init__(self, poll_seconds: float = 2.0, lost_store_seconds: float = 30.0) -> None:
        super().__init__(name="llava-vitsplit-failure-watchdog", daemon=True)
        self.poll_seconds, self.lost_store_seconds = poll_seconds, lost_store_seconds
        self.finished = threading.Event()  # set by this rank once it is done (successfully or not)

    def run(self) -> None:
        store, lost_since = None, None
        while not self.finished.wait(self.poll_seconds):
            try:
                store = store or connect_store()
                if store is None:
                    return
                if store.check([_store_key()]):
                    self._stop(f"stopping: {store.get(_store_key()).decode()}")
                lost_since = None
            except Exception as err:  # unreachable store: rank 0 or the launcher exited
                store, lost_since = None, lost_since or time.monotonic()
                if time.monotonic() - lost_since >= self.lost_store_seconds:
                    self._stop(
                        f"stopping: the rendezvous store is gone for {self.lost_store_seconds:.0f} s ({err})"
                    )

    def _stop(self, message: str) -> None:
        if self.finished.is_set():
            return
        logger.error(message)
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(EXIT_FAILED)
