"""The switchable 3x3 convolution of the prior head and fusion net.

``deformable``: DCNv1 as in the paper and the authors' dense code: a plain 3x3 conv (with bias,
padding 1) predicts 2*3*3 = 18 offset channels, then ``torchvision.ops.deform_conv2d`` applies a 3x3
kernel without bias, one offset group and no modulation mask. The offset predictor starts at zero, so
at initialisation the layer is an ordinary 3x3 convolution. ``deform_conv2d`` has no bfloat16 kernel on
CPU, so inputs and weights are upcast to float32 inside the module and the result cast back.

``plain``: ``nn.Conv2d(C_in, C_out, 3, padding=1)`` with bias, as in the released LLaVA code.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.ops import deform_conv2d


class DeformableConv3x3(nn.Module):
    """3x3 DCNv1 layer: ``[B, C_in, h, w] -> [B, C_out, h, w]``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.offset = nn.Conv2d(in_channels, 2 * 3 * 3, kernel_size=3, padding=1, bias=True)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        with torch.autocast(device_type=x.device.type, enabled=False):
            offset = nn.functional.conv2d(
                x32, self.offset.weight.float(), self.offset.bias.float(), padding=1
            )  # [B, 18, h, w]
            out = deform_conv2d(
                x32, offset, self.weight.float(), bias=None, padding=(1, 1)
            )  # [B, C_out, h, w]
        return out.to(dtype)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size=3, offset_groups=1, bias=False"


def make_conv3x3(in_channels: int, out_channels: int, conv_type: str) -> nn.Module:
    """The adapter's 3x3 layer by name: ``deformable`` or ``plain``."""
    if conv_type == "deformable":
        return DeformableConv3x3(in_channels, out_channels)
    if conv_type == "plain":
        return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=True)
    raise ValueError(f"conv_type must be 'deformable' or 'plain', got {conv_type!r}")
