"""Dense prediction heads on the adapter's fused map ``[B, C, h, w]``.

- ``SegmentationHead``: ``[ConvT(C, C, 2, s=2), GroupNorm, GELU] x 2`` (4x up), ``BatchNorm(C)``,
  ``Conv1x1(C -> classes)``: ``[B, C, h, w] -> [B, K, 4h, 4w]``.
- ``DepthHead``: ``ConvT(C -> C/2)``, GN, GELU, ``ConvT(C/2 -> 64)``, GN, GELU, ``BatchNorm(64)``,
  ``Conv3x3(64 -> 1)``, ``ReLU + min_depth``: ``[B, C, h, w] -> [B, 1, 4h, 4w]`` (metres).

The 2x2, stride-2 transposed convs are ``PixelUpsample2x``: the same parameters as
``nn.ConvTranspose2d`` (and the same state-dict keys), computed as one matmul per pixel plus a pixel
shuffle, which on CPU takes about half the time of the transposed-conv kernel at 4x resolution.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with 32 groups, or the largest divisor of ``channels`` shared with 32 (tiny test widths)."""
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class PixelUpsample2x(nn.ConvTranspose2d):
    """``ConvTranspose2d(C_in, C_out, kernel_size=2, stride=2)`` as a matmul: ``[B, C_in, h, w] -> [B, C_out, 2h, 2w]``.

    With kernel = stride = 2 each input pixel writes its own 2x2 output block, ``out[:, o, 2y + i, 2x + j] =
    bias[o] + sum_c in[:, c, y, x] * weight[c, o, i, j]``, so the layer is a linear map per pixel.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        out = self.out_channels
        pixels = x.flatten(2).transpose(1, 2)  # [B, h*w, C_in]
        blocks = torch.matmul(pixels, self.weight.reshape(c, out * 4).to(x.dtype))  # [B, h*w, C_out*2*2]
        blocks = blocks.view(b, h, w, out, 2, 2).permute(0, 3, 1, 4, 2, 5)  # [B, C_out, h, 2, w, 2]
        return blocks.reshape(b, out, 2 * h, 2 * w) + self.bias.to(x.dtype).view(1, out, 1, 1)


def up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """``ConvTranspose2d(k=2, s=2) + GroupNorm + GELU``: ``[B, C_in, h, w] -> [B, C_out, 2h, 2w]``."""
    return nn.Sequential(
        PixelUpsample2x(in_channels, out_channels),
        group_norm(out_channels),
        nn.GELU(),
    )


class SegmentationHead(nn.Module):
    """``[B, C, h, w] -> [B, num_classes, 4h, 4w]`` logits."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.upsample = nn.Sequential(up_block(channels, channels), up_block(channels, channels))
        self.norm = nn.BatchNorm2d(channels)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.norm(self.upsample(x)))  # [B, K, 4h, 4w]


class DepthHead(nn.Module):
    """``[B, C, h, w] -> [B, 1, 4h, 4w]`` positive depth (``ReLU + min_depth``)."""

    def __init__(self, channels: int, min_depth: float = 1e-3, mid_channels: int = 64) -> None:
        super().__init__()
        half = channels // 2
        self.upsample = nn.Sequential(up_block(channels, half), up_block(half, mid_channels))
        self.norm = nn.BatchNorm2d(mid_channels)
        self.predict = nn.Conv2d(mid_channels, 1, kernel_size=3, padding=1)
        self.min_depth = min_depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.predict(self.norm(self.upsample(x)))) + self.min_depth  # [B, 1, 4h, 4w]
