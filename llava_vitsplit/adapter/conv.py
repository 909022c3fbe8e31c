"""The switchable 3x3 convolution of the prior head and fusion net.

``deformable``: DCNv1 as in the paper and the authors' dense code: a plain 3x3 conv (with bias,
padding 1) predicts 2*3*3 = 18 offset channels (``(dy, dx)`` per kernel tap, taps row-major), then a
3x3 kernel without bias is applied at the shifted positions (bilinear sampling, zero outside the map),
one offset group and no modulation mask. The offset predictor starts at zero, so at initialisation the
layer is an ordinary 3x3 convolution.

Two equal implementations, chosen per call by device and dtype:

- ``torchvision.ops.deform_conv2d`` on CUDA. Its kernel takes float16/32/64; other dtypes (bfloat16)
  are upcast to float32 for this call only and the result cast back.
- ``sampled_deform_conv3x3`` everywhere else: the 9 bilinearly sampled taps of every pixel are gathered
  as rows of the channels-last map (``sampling.deform_taps``, ``[B, h*w, 9*C]``) and one matmul applies
  the kernel. torchvision's CPU kernel has no bfloat16 and is several times slower than this on CPU;
  the matmul runs in the input's dtype, bfloat16 included (only the sampling keeps float32 positions).

``plain``: ``nn.Conv2d(C_in, C_out, 3, padding=1)`` with bias, as in the released LLaVA code.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.ops import deform_conv2d

from llava_vitsplit.adapter.sampling import deform_taps

TORCHVISION_KERNEL_DTYPES = {
    "cuda": (torch.float16, torch.float32, torch.float64),
    "cpu": (torch.float32, torch.float64),
}
TORCHVISION_DEVICES = ("cuda",)  # where torchvision's kernel is the faster of the two


def torchvision_compute_dtype(device_type: str, dtype: torch.dtype) -> torch.dtype:
    """``dtype`` where torchvision's deform_conv2d has a kernel for it on ``device_type``, else float32."""
    return dtype if dtype in TORCHVISION_KERNEL_DTYPES.get(device_type, ()) else torch.float32


def sampled_deform_conv3x3(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """DCNv1 3x3 (stride 1, padding 1, no bias) as bilinear row gathers + one matmul: ``[B, C, h, w] -> [B, O, h, w]``.

    Equal to ``torchvision.ops.deform_conv2d(x, offset, weight, padding=(1, 1))``, gradients included
    (``sampling.deform_taps``: zeros outside the map, the same one-sided offset derivative at integer
    positions, the initialisation). The matmul runs in ``x``'s dtype. The result is a channels-last view.
    """
    b, c, h, w = x.shape
    out_channels = weight.shape[0]
    columns = deform_taps(x, offset)  # [B, h*w, 9*C]
    kernel = weight.permute(0, 2, 3, 1).reshape(out_channels, 9 * c).to(x.dtype)  # [O, 9*C], tap-major
    out = torch.matmul(columns, kernel.t())  # [B, h*w, O]
    return out.view(b, h, w, out_channels).permute(0, 3, 1, 2)  # [B, O, h, w]


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
        offset = self.offset(x)  # [B, 18, h, w]
        if x.device.type not in TORCHVISION_DEVICES:
            return sampled_deform_conv3x3(x, offset, self.weight)  # [B, C_out, h, w]
        return self.torchvision_forward(x, offset)

    def torchvision_forward(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """torchvision's kernel in the input's dtype, or float32 where it has no kernel for it."""
        dtype = x.dtype
        compute = torchvision_compute_dtype(x.device.type, dtype)
        with torch.autocast(device_type=x.device.type, enabled=False):  # its autocast rule upcasts
            out = deform_conv2d(
                x.to(compute), offset.to(compute), self.weight.to(compute), bias=None, padding=(1, 1)
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
