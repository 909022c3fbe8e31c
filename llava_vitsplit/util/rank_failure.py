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
  stays unreachable for ``lost_store_seconds`` after it was reached (rank 0 or the launcher is gone)
  ends it the same way.
- ``stopping_every_rank_on_failure(run)``: runs ``run()`` with the watchdog; an exception is logged with
  its traceback, reported, and ends the process with exit code 1 (``llava-vitsplit train``, ``dense-train``).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import torch.distributed as dist

logger = logging.getLogger(__name__)

FAILURE_KEY = "llava_vitsplit/failed_rank"
EXIT_FAILED = 1
STORE_TIMEOUT_S = 10.0  # the longest a store call of the watchdog can block
T = TypeVar("T")


def _store_key() -> str:
    return f"{FAILURE_KEY}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"  # one per torchrun restart


def launched_on_several_ranks() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "MASTER_ADDR" in os.environ


def connect_store(timeout_s: float = STORE_TIMEOUT_S):
    """A client of the rendezvous store, or None outside a multi-process launch."""
    if not launched_on_several_ranks():
        return None
    return dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        is_master=False,
        timeout=timedelta(seconds=timeout_s),
        wait_for_workers=False,
    )


def report_failure(err: BaseException) -> None:
    """Publish ``err`` as this rank's failure (the first one reported wins) and log the run's first failure."""
    message = f"rank {os.environ.get('RANK', '0')} ({socket.gethostname()}): {type(err).__name__}: {err}"
    first = message
    try:
        store = connect_store()
        if store is not None:
            first = store.compare_set(_store_key(), "", message).decode()
    except Exception as store_err:  # the store host may be this very failure
        logger.error("could not tell the other ranks (%s)", store_err)
    if first == message:
        logger.error("this rank failed, stopping every rank: %s", message)
    else:  # another rank failed first: this rank's error is most likely a consequence
        logger.error("stopping: %s (then this rank failed too: %s)", first, message)


class FailureWatchdog(threading.Thread):
    def __init__(self, poll_seconds: float = 2.0, lost_store_seconds: float = 30.0) -> None:
        super().__init__(name="llava-vitsplit-failure-watchdog", daemon=True)
        self.poll_seconds, self.lost_store_seconds = poll_seconds, lost_store_seconds
        self.finished = threading.Event()  # set by this rank once it is done (successfully or not)

    def run(self) -> None:
        store, reached, lost_since = None, False, None
        while not self.finished.wait(self.poll_seconds):
            try:
                store = store or connect_store()
                if store is None:
                    return
                reached = True
                if store.check([_store_key()]):
                    self._end_process(f"stopping: {store.get(_store_key()).decode()}")
                lost_since = None
            except Exception as err:  # unreachable store: not up yet, or rank 0 / the launcher exited
                store = None
                if not reached:
                    continue
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since >= self.lost_store_seconds:
                    self._end_process(
                        f"stopping: the rendezvous store is gone for {self.lost_store_seconds:.0f} s ({err})"
                    )

    def stop(self) -> None:
        """Let the thread end and wait for it (at most one store call, ``STORE_TIMEOUT_S``).

        A daemon thread still inside a store call when the interpreter finalizes is ended by Python as it
        takes the GIL back, inside torch's C++ frames, which can abort the process (``std::terminate``)
        after a run that succeeded."""
        self.finished.set()
        self.join(timeout=STORE_TIMEOUT_S + self.poll_seconds)
        if self.is_alive():
            logger.warning("the failure watchdog is still inside a store call at exit")

    def _end_process(self, message: str) -> None:
        if self.finished.is_set():
            return
        logger.error(message)
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(EXIT_FAILED)


def stopping_every_rank_on_failure(run: Callable[[], T]) -> T:
    """``run()`` under a ``FailureWatchdog``; an exception stops this rank (exit 1) and, through the store,
    every other rank. In a single process (``WORLD_SIZE`` unset or 1) it is ``run()``: exceptions propagate."""
    if not launched_on_several_ranks():
        return run()
    watchdog = FailureWatchdog()
    watchdog.start()
    try:
        return run()
    except Exception as err:
        watchdog.finished.set()
        logger.exception("failed")
        report_failure(err)
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_FAILED)  # no interpreter teardown: it can block on a process group with a dead peer
    finally:
        watchdog.stop()
