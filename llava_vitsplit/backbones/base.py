"""The one interface every frozen backbone implements for the ViT-Split adapter.

A ``FrozenBackbone`` takes normalised pixels ``[B, 3, H, W]`` of any size, pads them on the right and
bottom to a multiple of the patch size, runs the frozen tower under ``torch.no_grad()`` in eval mode,
and returns every hidden state ``h[0] .. h[L]`` (each ``[B, P + h*w, C]``; ``P`` prefix tokens) plus
the patch grid ``(h, w)``. The adapter (``llava_vitsplit.adapter``) reads what it needs from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class BackboneOutput:
    """Hidden states ``h[0..L]`` (each ``[B, P + h*w, C]``), the patch grid and the unpadded input size."""

    hidden_states: tuple[torch.Tensor, ...]
    grid_hw: tuple[int, int]
    input_hw: tuple[int, int]


class FrozenBackbone(nn.Module):
    """Base class: a frozen ViT exposing its blocks and final norm.

    Subclasses set ``num_layers`` (L), ``channels`` (C), ``patch_size``, ``num_prefix_tokens`` (P),
    ``blocks`` (the ``nn.ModuleList`` of transformer blocks, each ``[B, T, C] -> [B, T, C]``) and
    ``norm`` (the final norm applied to dense features, or ``None``), and implement ``_hidden_states``.
    """

    num_layers: int
    channels: int
    patch_size: int
    num_prefix_tokens: int
    norm: nn.Module | None

    def freeze(self) -> None:
        """Turn off gradients for every parameter and put the tower in eval mode for good."""
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenBackbone:
        """A frozen tower stays in eval mode (no dropout / drop-path) whatever the caller asks."""
        return super().train(False)

    @property
    def blocks(self) -> nn.ModuleList:
        raise NotImplementedError

    def pad(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Zero-pad ``[B, 3, H, W]`` on the right/bottom to a multiple of the patch size; return it and ``(h, w)``."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"expected pixel_values [B, 3, H, W], got {tuple(pixel_values.shape)}")
        height, width = pixel_values.shape[-2:]
        p = self.patch_size
        pad_h, pad_w = (-height) % p, (-width) % p
        if pad_h or pad_w:
            pixel_values = F.pad(pixel_values, (0, pad_w, 0, pad_h))  # [B, 3, h*p, w*p]
        return pixel_values, ((height + pad_h) // p, (width + pad_w) // p)

    def _hidden_states(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``h[0..L]`` for padded pixels ``[B, 3, h*p, w*p]``; each ``[B, P + h*w, C]``."""
        raise NotImplementedError

    def forward(self, pixel_values: torch.Tensor) -> BackboneOutput:
        input_hw = (int(pixel_values.shape[-2]), int(pixel_values.shape[-1]))
        padded, grid_hw = self.pad(pixel_values)
        dtype = next(self.parameters()).dtype
        with torch.no_grad():
            hidden = self._hidden_states(padded.to(dtype))
        if len(hidden) != self.num_layers + 1:
            raise RuntimeError(
                f"{type(self).__name__} returned {len(hidden)} hidden states, expected {self.num_layers + 1}"
            )
        return BackboneOutput(hidden_states=tuple(hidden), grid_hw=grid_hw, input_hw=input_hw)
