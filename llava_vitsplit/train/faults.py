"""Fault injection for ``llava-vitsplit train``: real failures at a chosen step and rank, to test recovery.

Set ``LLAVA_VITSPLIT_FAULT=KIND@STEPS[:RANK]`` (unset in normal runs: nothing here runs then). ``STEPS`` is
a comma-separated list of optimizer steps (1-based, the step being computed), ``RANK`` the global rank
that fails (every rank when left out). Each kind goes through the code path the real failure takes:

- ``save``: the checkpoint save of that step fails with ``ENOSPC`` (as a full disk reports it);
- ``worker``: the data-loader worker collating that step's batch raises (``--dataloader_num_workers`` >= 1);
- ``oom``: the forward pass of that step raises ``torch.OutOfMemoryError``;
- ``nonfinite``: that step's loss is multiplied by infinity;
- ``sigterm`` / ``sigusr1``: the process sends itself that signal during that step (a scheduler's
  preemption notice).
"""

from __future__ import annotations

import errno
import os
import signal
from dataclasses import dataclass

import torch

FAULT_ENV = "LLAVA_VITSPLIT_FAULT"
KINDS = ("save", "worker", "oom", "nonfinite", "sigterm", "sigusr1")


class InjectedWorkerError(RuntimeError):
    """The ``worker`` fault: raised inside a data-loader worker."""


@dataclass(frozen=True)
class Fault:
    kind: str
    steps: frozenset[int]
    rank: int | None  # None: every rank

    def hits(self, kind: str, step: int) -> bool:
        """This fault is ``kind`` and fires at optimizer step ``step`` on this process's rank."""
        rank = int(os.environ.get("RANK", "0"))
        return self.kind == kind and step in self.steps and self.rank in (None, rank)


def parse_fault(spec: str) -> Fault:
    """``KIND@STEPS[:RANK]`` as a ``Fault``; ``ValueError`` naming the variable on a malformed value."""
    try:
        kind, rest = spec.split("@", 1)
        steps, _, rank = rest.partition(":")
        fault = Fault(kind, frozenset(int(s) for s in steps.split(",")), int(rank) if rank else None)
    except ValueError as err:
        raise ValueError(f"{FAULT_ENV}={spec!r}: expected KIND@STEP[,STEP...][:RANK] ({err})") from None
    if fault.kind not in KINDS:
        raise ValueError(f"{FAULT_ENV}={spec!r}: unknown kind {fault.kind!r} (one of {', '.join(KINDS)})")
    return fault


def configured_fault() -> Fault | None:
    spec = os.environ.get(FAULT_ENV, "").strip()
    return parse_fault(spec) if spec else None


def inject_in_step(fault: Fault | None, step: int, loss: torch.Tensor) -> torch.Tensor:
    """The faults of the forward pass of optimizer step ``step``: returns ``loss`` (made inf for ``nonfinite``)."""
    if fault is None:
        return loss
    if fault.hits("oom", step):
        raise torch.OutOfMemoryError(f"injected out-of-memory error at step {step} ({FAULT_ENV})")
    for kind, signum in (("sigterm", signal.SIGTERM), ("sigusr1", signal.SIGUSR1)):
        if fault.hits(kind, step):
            os.kill(os.getpid(), signum)
    if fault.hits("nonfinite", step):
        return loss * float("inf")
    return loss


def inject_in_save(fault: Fault | None, step: int) -> None:
    if fault is not None and fault.hits("save", step):
        raise OSError(errno.ENOSPC, f"No space left on device (injected at step {step}, {FAULT_ENV})")


class FaultyCollator:
    """Wraps a collator; the ``worker`` fault raises while collating batch number ``step`` of a worker.

    With one worker per rank and no gradient accumulation, the worker's n-th batch is step n's batch."""

    def __init__(self, collator, fault: Fault) -> None:
        self.collator, self.fault, self.batches = collator, fault, 0

    def __call__(self, items):
        self.batches += 1
        if self.fault.hits("worker", self.batches):
            raise InjectedWorkerError(f"injected data-worker error in batch {self.batches} ({FAULT_ENV})")
        return self.collator(items)
