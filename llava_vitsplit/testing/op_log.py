"""``OpLog``: a dispatch mode that records every aten/torchvision op run inside it (tests of fast layers)."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class OpLog(TorchDispatchMode):
    """Records ``(op name, output shape, output dtype)`` of every aten/torchvision op run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, tuple[int, ...], torch.dtype]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        first = out[0] if isinstance(out, tuple | list) and out else out
        if isinstance(first, torch.Tensor):
            self.ops.append((str(func.overloadpacket.__name__), tuple(first.shape), first.dtype))
        return out
