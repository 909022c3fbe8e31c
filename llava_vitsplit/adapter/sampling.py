"""Bilinear sampling of the 3x3 deformable conv's taps as row gathers of a channels-last map.

``deform_taps(x, offset)`` gives the ``[B, h*w, 9*C]`` columns of DCNv1 (3x3, stride 1, padding 1, one
offset group): for each output pixel and tap the bilinear mix of the four neighbouring pixels' ``C``-vectors
(zero outside the map), as torchvision's ``deform_conv2d`` samples them. Each neighbour is one contiguous
row of the ``[B*h*w, C]`` map, so the mix is ``F.embedding_bag`` (bags of 4 rows, ``per_sample_weights`` =
the bilinear weights, ``mode="sum"``): one fused gather per tap, whole rows scattered back in backward,
and the weights' gradient (hence the offsets') from the same kernel. Only the map, the corner indices
and the corner weights are kept for backward. Positions and weights are at least float32 (bfloat16's
8 mantissa bits are too few for sampling positions); the mix is computed in float32 and returned in
``x``'s dtype.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def tap_positions(offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Absolute sampling rows/cols ``[B, 9, h, w]`` of a 3x3, padding-1 kernel shifted by ``offset [B, 18, h, w]``."""
    b, _, h, w = offset.shape
    taps = torch.arange(-1, 2, device=offset.device, dtype=offset.dtype)  # [3]
    tap_y = taps.repeat_interleave(3).view(1, 9, 1, 1)  # row offset of tap k = 3*i + j
    tap_x = taps.repeat(3).view(1, 9, 1, 1)
    rows = torch.arange(h, device=offset.device, dtype=offset.dtype).view(1, 1, h, 1)
    cols = torch.arange(w, device=offset.device, dtype=offset.dtype).view(1, 1, 1, w)
    shift = offset.view(b, 9, 2, h, w)  # (dy, dx) per tap
    return rows + tap_y + shift[:, :, 0], cols + tap_x + shift[:, :, 1]


def _corners(pos_y: torch.Tensor, pos_x: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices ``[B, h*w, 9, 4]`` into the ``[B*h*w, C]`` map and bilinear weights (0 outside the map)."""
    b = pos_y.shape[0]
    y0, x0 = pos_y.floor(), pos_x.floor()  # [B, 9, h, w]
    fy, fx = pos_y - y0, pos_x - x0  # the floor has no gradient: torchvision's one-sided derivative
    indices, weights = [], []
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yc, xc = y0 + dy, x0 + dx
            inside = (yc >= 0) & (yc < h) & (xc >= 0) & (xc < w)
            flat = yc.clamp(0, h - 1).long() * w + xc.clamp(0, w - 1).long()
            indices.append(flat)
            weights.append(wy * wx * inside)
    base = (torch.arange(b, device=pos_y.device) * (h * w)).view(b, 1, 1, 1, 1)
    index = torch.stack(indices, dim=-1) + base  # [B, 9, h, w, 4]
    weight = torch.stack(weights, dim=-1)
    return tuple(t.permute(0, 2, 3, 1, 4).reshape(b, h * w, 9, 4) for t in (index, weight))


def deform_taps(x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """DCNv1 3x3 columns ``[B, h*w, 9*C]`` (entry ``k*C + c``: tap ``k = 3*i + j``, channel ``c``) of ``x [B, C, h, w]``."""
    b, c, h, w = x.shape
    sample_dtype = torch.promote_types(x.dtype, torch.float32)
    pos_y, pos_x = tap_positions(offset.to(sample_dtype))  # [B, 9, h, w]
    index, weight = _corners(pos_y, pos_x, h, w)  # [B, h*w, 9, 4] each
    rows = x.permute(0, 2, 3, 1).reshape(b * h * w, c)  # [B*h*w, C], channels last
    # one bag of 4 weighted rows per (pixel, tap): [B*h*w*9, C]
    mixed = F.embedding_bag(
        index.reshape(-1, 4), rows.to(sample_dtype), per_sample_weights=weight.reshape(-1, 4), mode="sum"
    )
    return mixed.to(x.dtype).view(b, h * w, 9 * c)
