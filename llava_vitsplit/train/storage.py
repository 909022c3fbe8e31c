"""The output folder of a training run: proven writable and roomy before step 1, clear errors on a full disk.

- ``prepare_output_dir``: creates ``OUTPUT_DIR`` and writes a probe file into it, so an unwritable folder
  fails before the model is built, not at the first save after hours of training.
- ``check_free_space``: the disk must hold one checkpoint (``checkpoint_bytes``: the weights in their
  dtype plus fp32 master weights and two Adam moments per trainable parameter).
- ``reporting_full_disk``: a write that fails for lack of space (``ENOSPC``, or torch's
  ``[enforce fail at inline_container.cc] unexpected pos`` from a truncated zip write) is re-raised as
  ``NoSpaceLeft``: "no space left on <path>".
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

# torch's zip writer reports a full disk as a failed or short write, not as ENOSPC.
_TORCH_SHORT_WRITE = ("unexpected pos", "file write failed", "PytorchStreamWriter failed")
OPTIMIZER_BYTES_PER_TRAINABLE = 12  # fp32 master copy + Adam's exp_avg and exp_avg_sq


class NoSpaceLeft(OSError):
    def __init__(self, path: str | Path, detail: str) -> None:
        super().__init__(errno.ENOSPC, f"no space left on {path}: {detail}")


def prepare_output_dir(path: str | Path) -> Path:
    """Create ``path`` and prove a file can be written there; a clear ``OSError`` otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-") as probe:
            probe.write(b"ok")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise NoSpaceLeft(path, "cannot even write a probe file") from err
        raise OSError(err.errno, f"OUTPUT_DIR {path} is not writable: {err.strerror or err}") from err
    return path


def checkpoint_bytes(model: torch.nn.Module) -> int:
    """About the size of one checkpoint of ``model`` (weights + optimizer state)."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return weights + OPTIMIZER_BYTES_PER_TRAINABLE * trainable


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def check_free_space(path: str | Path, needed: int) -> None:
    free = shutil.disk_usage(path).free
    if free < needed:
        raise NoSpaceLeft(path, f"{_gib(free)} free, one checkpoint needs about {_gib(needed)}")


def is_out_of_space(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    return isinstance(err, RuntimeError) and any(s in str(err) for s in _TORCH_SHORT_WRITE)


@contextmanager
def reporting_full_disk(path: str | Path, what: str) -> Iterator[None]:
    """Re-raise a write that failed for lack of space as ``NoSpaceLeft`` naming ``path`` and ``what``."""
    try:
        yield
    except NoSpaceLeft:
        raise
    except (OSError, RuntimeError) as err:
        if is_out_of_space(err):
            raise NoSpaceLeft(path, f"writing {what} failed ({err})") from err
        raise
