"""The switchable 3x3 convolution of the prior head and fusion net.

``deformable``: DCNv1 as in the paper and the authors' dense code: a plain 3x3 conv (with bias,
padding 1) predicts 2*3*3 = 18 offset channels (``(dy, dx)`` per kernel tap, taps row-major), then a
3x3 kernel without bias is applied at the shifted positions (bilinear sampling, zero outside the map),
one offset group and no modulation mask. The offset predictor starts at zero, so at initialisation the
layer is an ordinary 3x3 convolution.

Two equal implementations, chosen per call by device and dtype:

- ``torchvision.ops.deform_conv2d`` on CUDA. Its kernel takes float16/32/64; other dtypes (bfloat16)
  are upcast to float32 for this call only and the result cast back.
- ``sampled_deform_conv3x3`` everywhere else: ``grid_sample`` gathers the 9 shifted copies of the input
  (``[B, C*9, h*w]``) and one matmul applies the kernel. torchvision's CPU kernel has no bfloat16 and
  its backward is about 3x slower than this on CPU; the matmul runs in the input's dtype, bfloat16
  included (only the bilinear sampling keeps float32 positions).

``plain``: ``nn.Conv2d(C_in, C_out, 3, padding=1)`` with bias, as in the released LLaVA code.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import deform_conv2d

TORCHVISION_KERNEL_DTYPES = {
    "cuda": (torch.float16, torch.float32, torch.float64),
    "cpu": (torch.float32, torch.float64),
}
TORCHVISION_DEVICES = ("cuda",)  # where torchvision's kernel is the faster of the two


def torchvision_compute_dtype(device_type: str, dtype: torch.dtype) -> torch.dtype:
    """``dtype`` where torchvision's deform_conv2d has a kernel for it on ``device_type``, else float32."""
    return dtype if dtype in TORCHVISION_KERNEL_DTYPES.get(device_type, ()) else torch.float32


def _tap_positions(offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Absolute sampling rows/cols ``[B, 9, h, w]`` of a 3x3, padding-1 kernel shifted by ``offset [B, 18, h, w]``."""
    b, _, h, w = offset.shape
    taps = torch.arange(-1, 2, device=offset.device, dtype=offset.dtype)  # [3]
    tap_y = taps.repeat_interleave(3).view(1, 9, 1, 1)  # row offset of tap k = 3*i + j
    tap_x = taps.repeat(3).view(1, 9, 1, 1)
    rows = torch.arange(h, device=offset.device, dtype=offset.dtype).view(1, 1, h, 1)
    cols = torch.arange(w, device=offset.device, dtype=offset.dtype).view(1, 1, 1, w)
    shift = offset.view(b, 9, 2, h, w)  # (dy, dx) per tap
    return rows + tap_y + shift[:, :, 0], cols + tap_x + shift[:, :, 1]


def sampled_deform_conv3x3(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """DCNv1 3x3 (stride 1, padding 1, no bias) via ``grid_sample`` + matmul: ``[B, C, h, w] -> [B, O, h, w]``.

    Equal to ``torchvision.ops.deform_conv2d(x, offset, weight, padding=(1, 1))``, gradients included:
    both sample bilinearly with zeros outside the map. The map is zero-padded to power-of-two sides so
    that the normalised grid (``align_corners=False``: pixel ``p`` -> ``(2p + 1) / size - 1``) is exact
    at integer positions; there, at zero offsets (the initialisation), both then take the same one-sided
    derivative for the offsets. Sampling positions need more than bfloat16's 8 mantissa bits, so the
    sampling runs in at least float32; the matmul runs in ``x``'s dtype.
    """
    b, c, h, w = x.shape
    out_channels = weight.shape[0]
    side_h, side_w = 1 << (h - 1).bit_length(), 1 << (w - 1).bit_length()
    sample_dtype = torch.promote_types(x.dtype, torch.float32)
    padded = F.pad(x.to(sample_dtype), (0, side_w - w, 0, side_h - h))  # [B, C, side_h, side_w]
    pos_y, pos_x = _tap_positions(offset.to(sample_dtype))  # [B, 9, h, w]
    grid = torch.stack(
        [(2 * pos_x + 1) / side_w - 1, (2 * pos_y + 1) / side_h - 1], dim=-1
    )  # [B, 9, h, w, 2]
    taps = F.grid_sample(
        padded, grid.view(b, 9 * h, w, 2), mode="bilinear", padding_mode="zeros", align_corners=False
    )  # [B, C, 9h, w]
    columns = taps.to(x.dtype).reshape(
        b, c * 9, h * w
    )  # [B, C*9, h*w], row c*9 + k as in weight.view(O, C*9)
    out = torch.matmul(weight.reshape(out_channels, c * 9).to(x.dtype), columns)  # [B, O, h*w]
    return out.view(b, out_channels, h, w)


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
