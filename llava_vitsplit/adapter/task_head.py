"""Task head: a trainable copy of the frozen tower's last ``K_t`` (effective) blocks.

The blocks are whatever module class the tower uses (CLIP, SigLIP, DINOv2, open_clip ...); the head
only needs each block to map a hidden-state tensor ``[B, T, C]`` to ``[B, T, C]`` (a tuple output is
accepted and its first element used). Backbone wrappers adapt blocks with other call signatures before
handing them over. A final norm (DINOv2's LayerNorm in the dense setting) is applied by the adapter,
not here: it is the frozen tower's own module, shared, not copied.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence

import torch
from torch import nn


def _needs_attention_mask(block: nn.Module) -> bool:
    """True when ``block.forward`` has a required ``attention_mask`` argument (CLIP, SigLIP layers)."""
    param = inspect.signature(block.forward).parameters.get("attention_mask")
    return param is not None and param.default is inspect.Parameter.empty


def call_block(block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Run one transformer block on ``[B, T, C]`` (full attention, no mask) and return ``[B, T, C]``."""
    out = block(hidden, attention_mask=None) if _needs_attention_mask(block) else block(hidden)
    return out[0] if isinstance(out, tuple | list) else out


class TaskHead(nn.Module):
    """``[B, T, C]`` (frozen ``h[E - K_t]``, detached) -> ``[B, T, C]`` through the copied blocks."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(blocks) == 0:
            raise ValueError("the task head needs at least one block")
        self.blocks = nn.ModuleList(copy.deepcopy(b) for b in blocks)
        for p in self.blocks.parameters():
            p.requires_grad_(True)

    @torch.no_grad()
    def load_from_blocks(self, source_blocks: Sequence[nn.Module]) -> None:
        """Copy weights from the tower's pretrained blocks (call after any weight re-initialisation)."""
        if len(source_blocks) != len(self.blocks):
            raise ValueError(f"task head has {len(self.blocks)} blocks, got {len(source_blocks)} sources")
        for mine, theirs in zip(self.blocks, source_blocks, strict=True):
            mine.load_state_dict(theirs.state_dict())

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            hidden = call_block(block, hidden)  # [B, T, C]
        return hidden
