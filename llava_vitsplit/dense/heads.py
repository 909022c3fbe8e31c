"""Dense prediction heads on the adapter's fused map ``[B, C, h, w]``.

- ``SegmentationHead``: ``[ConvT(C, C, 2, s=2), GroupNorm, GELU] x 2`` (4x up), ``BatchNorm(C)``,
  ``Conv1x1(C -> classes)``: ``[B, C, h, w] -> [B, K, 4h, 4w]``.
- ``DepthHead``: ``ConvT(C -> C/2)``, GN, GELU, ``ConvT(C/2 -> 64)``, GN, GELU, ``BatchNorm(64)``,
  ``Conv3x3(64 -> 1)``, ``ReLU + min_depth``: ``[B, C, h, w] -> [B, 1, 4h, 4w]`` (metres).

The 2x2, stride-2 transposed convs are ``PixelUpsample2x``: the same parameters as
``nn.ConvTranspose2d`` (and the same state-dict keys), computed as one matmul per pixel plus a pixel
shuffle, which on CPU takes about half the time of the transposed-conv kernel at 4x resolution.
``UpBlock`` rebuilds its GroupNorm's output in backward from the saved statistics instead of keeping it, and
``batch_norm_conv1x1`` computes the segmentation head's ``BatchNorm + Conv1x1`` with the norm folded into
the conv's weights (same modules, same running statistics), so the normalised 4x-resolution map is
neither written nor kept for backward; on several processes the norm is a ``SyncBatchNorm2d``
(``dense.sync_batchnorm``) and the fold uses the global batch's statistics and gradient sums.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from llava_vitsplit.dense.sync_batchnorm import (
    SyncBatchNorm2d,
    all_reduce_sums,
    global_statistics,
    synchronising,
)

FOLDABLE_DTYPES = (torch.float32, torch.float64)  # parameter dtypes the folded norm keeps its sums in


def group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with 32 groups, or the largest divisor of ``channels`` shared with 32 (tiny test widths)."""
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class PixelUpsample2x(nn.ConvTranspose2d):
    """``ConvTranspose2d(C_in, C_out, kernel_size=2, stride=2)`` as a matmul: ``[B, C_in, h, w] -> [B, C_out, 2h, 2w]``.

    With kernel = stride = 2 each input pixel writes its own 2x2 output block, ``out[:, o, 2y + i, 2x + j] =
    bias[o] + sum_c in[:, c, y, x] * weight[c, o, i, j]``, so the layer is a linear map per pixel. It is
    computed channels-last (one matmul over pixels, then a shuffle that moves whole channel vectors) and
    returns a channels-last tensor, which the following GroupNorm, GELU, BatchNorm and 1x1 conv keep.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        out = self.out_channels
        pixels = x.permute(0, 2, 3, 1).reshape(b * h * w, c)  # [B*h*w, C_in], free for channels-last x
        kernel = self.weight.permute(0, 2, 3, 1).reshape(c, 4 * out).to(x.dtype)  # [C_in, (i, j, o)]
        blocks = torch.addmm(self.bias.to(x.dtype).repeat(4), pixels, kernel)  # [B*h*w, 2*2*C_out]
        # [B, h, w, 2, 2, C_out] -> [B, h, 2, w, 2, C_out]: moves whole C_out rows
        shuffled = blocks.view(b, h, w, 2, 2, out).transpose(2, 3).reshape(b, 2 * h, 2 * w, out)
        return shuffled.permute(0, 3, 1, 2)  # [B, C_out, 2h, 2w], channels-last memory


def _batch_statistics(x: torch.Tensor, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor, bool | int]:
    """``(mean, invstd, from_batch)`` per channel ``[C]`` that ``norm`` uses on ``x``; updates running stats.

    ``from_batch``: False for running statistics, True for this batch's, the global pixel count ``N``
    for a ``SyncBatchNorm2d`` synchronising several processes (``dense.sync_batchnorm``)."""
    if not (norm.training or norm.running_mean is None):
        return norm.running_mean, torch.rsqrt(norm.running_var + norm.eps), False
    if isinstance(norm, SyncBatchNorm2d) and synchronising():
        mean, var, count = global_statistics(x, norm)
        return mean, torch.rsqrt(var + norm.eps), count
    with torch.no_grad():  # BatchNorm's own statistics kernel (a plain var_mean is ~15x slower channels-last)
        if norm.training and norm.track_running_stats:
            norm.num_batches_tracked.add_(1)
            factor = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked)
            mean, var = torch.batch_norm_update_stats(x, norm.running_mean, norm.running_var, factor)
        else:  # throwaway buffers in the norm's dtype: the statistics come back in it (bf16 x -> float32)
            blank = norm.weight.new_zeros(x.shape[1]), norm.weight.new_ones(x.shape[1])
            mean, var = torch.batch_norm_update_stats(x, *blank, 0.0)  # [C] each, biased variance
    return mean, torch.rsqrt(var + norm.eps), True


class _FoldedBatchNormConv1x1(torch.autograd.Function):
    """``conv1x1(batch_norm(x))`` with the norm folded into the conv; backward without the normalised map.

    ``y = scale * x + shift`` per channel (``scale = gamma * invstd``, ``shift = beta - mean * scale``),
    ``out = W y + b``. Backward needs only ``x``: ``dW = G * scale + s (x) shift`` with ``G = g_out x^T``
    and ``s = sum g_out``; ``g_y = W^T g_out`` turns into ``dx`` in place (BatchNorm's backward, written
    as ``k1 * g_y + k2 * x + k3`` per channel, all sums taken from ``G`` and ``s``).
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, weight, bias, mean, invstd, from_batch: bool | int):  # noqa: ANN001
        scale = invstd * gamma  # [C]
        shift = beta - mean * scale  # [C]
        w2d = weight.flatten(1)  # [K, C]
        ctx.save_for_backward(x, gamma, weight, mean, invstd, scale, shift)
        ctx.from_batch = from_batch
        b, c, h, w = x.shape
        out = F.linear(_pixels(x), w2d * scale, w2d @ shift + bias)  # [B*h*w, K]
        return out.view(b, h, w, -1).permute(0, 3, 1, 2)  # [B, K, h, w], channels-last memory

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # noqa: ANN001
        x, gamma, weight, mean, invstd, scale, shift = ctx.saved_tensors
        b, c, h, w = x.shape
        n = b * h * w
        flat_x, flat_g = _pixels(x), _pixels(grad_out)  # [N, C], [N, K]
        synced = type(ctx.from_batch) is int  # the global batch's statistics: global sums for dx
        compute, param = flat_g.dtype, weight.dtype  # bf16 under autocast; sums are kept in ``param``
        w2d = weight.flatten(1)  # [K, C]
        gram = (flat_g.t() @ flat_x.to(compute)).to(param)  # [K, C] = sum over pixels g_out x^T
        g_sum = flat_g.sum(0, dtype=param)  # [K]
        gy_sum = w2d.t() @ g_sum  # [C]: sum of g_y
        gy_xhat = invstd * ((w2d * gram).sum(0) - mean * gy_sum)  # [C]: sum of g_y * x_hat
        grad_x = flat_g @ w2d.to(compute)  # [N, C] = g_y
        grad_x.mul_(scale.to(compute))
        if ctx.from_batch:  # the statistics depend on x
            total_xhat, total_sum = all_reduce_sums(gy_xhat, gy_sum) if synced else (gy_xhat, gy_sum)
            n = ctx.from_batch if synced else n
            k2 = -scale * invstd * total_xhat / n  # [C]
            grad_x.addcmul_(flat_x.to(compute), k2.to(compute))
            grad_x.add_((-scale * total_sum / n - k2 * mean).to(compute))
        grad_weight = (gram * scale + g_sum[:, None] * shift).view_as(weight)
        grad_x = grad_x.to(x.dtype).view(b, h, w, c).permute(0, 3, 1, 2)  # [B, C, h, w], channels last
        return grad_x, gy_xhat, gy_sum, grad_weight, g_sum, None, None, None


def _pixels(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w] -> [B*h*w, C]`` (a view for channels-last memory, a copy otherwise)."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def batch_norm_conv1x1(x: torch.Tensor, norm: nn.Module, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(norm(x))`` for ``norm`` a ``BatchNorm2d`` and ``conv`` a 1x1 conv: ``[B, C, h, w] -> [B, K, h, w]``.

    The norm is an affine map per channel (batch statistics in training, running ones in eval, running
    statistics updated as BatchNorm does), so it folds into the conv (``_FoldedBatchNormConv1x1``): the
    normalised map is neither written nor kept. Under autocast the conv runs in the autocast dtype and
    the statistics and weight sums in the norm's float32, as BatchNorm keeps them. Other norms or convs,
    affine-less norms and low-precision parameters take ``conv(norm(x))``.
    """
    foldable = type(norm) in (nn.BatchNorm2d, SyncBatchNorm2d) and norm.affine and conv.kernel_size == (1, 1)
    foldable = (
        foldable and conv.groups == 1 and conv.bias is not None and norm.weight.dtype in FOLDABLE_DTYPES
    )
    device = x.device.type
    if torch.is_autocast_enabled(device):  # the conv runs in the autocast dtype, the statistics in float32
        foldable = foldable and x.dtype == torch.get_autocast_dtype(device)
    else:
        foldable = foldable and x.dtype == norm.weight.dtype
    if not foldable:
        return conv(norm(x))
    mean, invstd, from_batch = _batch_statistics(x, norm)
    return _FoldedBatchNormConv1x1.apply(
        x, norm.weight, norm.bias, conv.weight, conv.bias, mean, invstd, from_batch
    )  # [B, K, h, w]


class _GroupNormGELU(torch.autograd.Function):
    """``GELU(GroupNorm(x))`` keeping only ``x`` and the per-group statistics for backward.

    Backward rebuilds GELU's input from ``x`` with the saved mean / rstd (one affine pass, no second
    reduction), then runs aten's own ``gelu_backward`` and ``native_group_norm_backward``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, groups: int, eps: float):  # noqa: ANN001
        b, c = x.shape[:2]
        normed, mean, rstd = torch.ops.aten.native_group_norm(
            x, weight, bias, b, c, x[0, 0].numel(), groups, eps
        )
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.groups = groups
        return F.gelu(normed)  # [B, C, H, W]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # noqa: ANN001
        x, weight, bias, mean, rstd = ctx.saved_tensors
        b, c = x.shape[:2]
        g = ctx.groups
        # per-channel affine of the norm: normed = x * a + d, a = rstd * weight, d = bias - mean * a
        a = (rstd.view(b, g, 1) * weight.view(1, g, c // g)).reshape(b, c)  # [B, C]
        d = bias.view(1, c) - mean.view(b, g, 1).expand(b, g, c // g).reshape(b, c) * a
        spatial = (1,) * (x.dim() - 2)
        normed = torch.addcmul(d.view(b, c, *spatial).to(x.dtype), x, a.view(b, c, *spatial).to(x.dtype))
        grad_normed = torch.ops.aten.gelu_backward(grad_out, normed)
        grads = torch.ops.aten.native_group_norm_backward(
            grad_normed, x, mean, rstd, weight, b, c, x[0, 0].numel(), g, [True, True, True]
        )
        return (*grads, None, None)


class UpBlock(nn.Sequential):
    """``ConvTranspose2d(k=2, s=2) + GroupNorm + GELU``: ``[B, C_in, h, w] -> [B, C_out, 2h, 2w]``.

    When gradients are needed, ``GELU(GroupNorm(.))`` is one autograd node (``_GroupNormGELU``) that keeps
    only its input and the group statistics: the normalised map (GELU's input) is rebuilt in backward
    instead of kept, one map fewer at 2x / 4x resolution. Values and gradients are unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(PixelUpsample2x(in_channels, out_channels), group_norm(out_channels), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self[0](x)  # [B, C_out, 2h, 2w]
        norm, act = self[1], self[2]
        fusable = (
            type(norm) is nn.GroupNorm and norm.affine and type(act) is nn.GELU and act.approximate == "none"
        )
        if fusable and torch.is_grad_enabled():
            return _GroupNormGELU.apply(x, norm.weight, norm.bias, norm.num_groups, norm.eps)
        return act(norm(x))


class SegmentationHead(nn.Module):
    """``[B, C, h, w] -> [B, num_classes, 4h, 4w]`` logits."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.upsample = nn.Sequential(UpBlock(channels, channels), UpBlock(channels, channels))
        self.norm = nn.BatchNorm2d(channels)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return batch_norm_conv1x1(self.upsample(x), self.norm, self.classifier)  # [B, K, 4h, 4w]


class DepthHead(nn.Module):
    """``[B, C, h, w] -> [B, 1, 4h, 4w]`` positive depth (``ReLU + min_depth``)."""

    def __init__(self, channels: int, min_depth: float = 1e-3, mid_channels: int = 64) -> None:
        super().__init__()
        half = channels // 2
        self.upsample = nn.Sequential(UpBlock(channels, half), UpBlock(half, mid_channels))
        self.norm = nn.BatchNorm2d(mid_channels)
        self.predict = nn.Conv2d(mid_channels, 1, kernel_size=3, padding=1)
        self.min_depth = min_depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.predict(self.norm(self.upsample(x)))) + self.min_depth  # [B, 1, 4h, 4w]
