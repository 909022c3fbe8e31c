"""Prior head and fusion net: both are ``Conv1x1 -> GELU -> Conv3x3 -> GELU`` (``ConvBlock``).

Prior head: ``[B, K_p*C, h, w] -> [B, C, h, w]`` (channel compression, then the 3x3 layer).
Fusion net: ``concat([prior, task])`` on channels (prior first) ``[B, 2C, h, w] -> [B, C_out, h, w]``;
concatenation beats addition in the paper's ablation.
"""

from __future__ import annotations

import torch
from torch import nn

from llava_vitsplit.adapter.conv import make_conv3x3


class ConvBlock(nn.Module):
    """``Conv1x1(C_in -> C_out) + GELU + Conv3x3(C_out -> C_out) + GELU``."""

    def __init__(self, in_channels: int, out_channels: int, conv_type: str) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=True)
        self.spatial = make_conv3x3(out_channels, out_channels, conv_type)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.reduce(x))  # [B, C_out, h, w]
        return self.act(self.spatial(x))  # [B, C_out, h, w]


class PriorHead(ConvBlock):
    """Aggregates ``K_p`` frozen layer maps ``[B, K_p*C, h, w]`` into one map ``[B, C, h, w]``."""

    def __init__(self, num_prior_layers: int, channels: int, conv_type: str) -> None:
        super().__init__(num_prior_layers * channels, channels, conv_type)


class FusionNet(ConvBlock):
    """Fuses ``prior [B, C, h, w]`` and ``task [B, C, h, w]`` into ``[B, C_out, h, w]``."""

    def __init__(self, channels: int, out_channels: int, conv_type: str) -> None:
        super().__init__(2 * channels, out_channels, conv_type)

    def forward(self, prior: torch.Tensor, task: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(torch.cat([prior, task], dim=1))  # [B, C_out, h, w]
