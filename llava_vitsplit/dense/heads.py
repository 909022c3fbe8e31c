"""Dense prediction heads on the adapter's fused map ``[B, C, h, w]``.

- ``SegmentationHead``: ``[ConvT(C, C, 2, s=2), GroupNorm, GELU] x 2`` (4x up), ``BatchNorm(C)``,
  ``Conv1x1(C -> classes)``: ``[B, C, h, w] -> [B, K, 4h, 4w]``.
- ``DepthHead``: ``ConvT(C -> C/2)``, GN, GELU, ``ConvT(C/2 -> 64)``, GN, GELU, ``BatchNorm(64)``,
  ``Conv3x3(64 -> 1)``, ``ReLU + min_depth``: ``[B, C, h, w] -> [B, 1, 4h, 4w]`` (metres).

The 2x2, stride-2 transposed convs are ``PixelUpsample2x``: the same parameters as
``nn.ConvTranspose2d`` (and the same state-dict keys), computed as one matmul per pixel plus a pixel
shuffle, which on CPU takes about half the time of the transposed-conv kernel at 4x resolution.
``UpBlock`` recomputes its GroupNorm + GELU in backward instead of keeping the normalised map, and
``batch_norm_conv1x1`` computes the segmentation head's ``BatchNorm + Conv1x1`` with the norm folded into
the conv's weights (same modules, same running statistics), so the normalised 4x-resolution map is
neither written nor kept for backward.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

FOLDABLE_DTYPES = (torch.float32, torch.float64)  # where var_mean's statistics match BatchNorm's


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


def _batch_statistics(x: torch.Tensor, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(mean, invstd, from_batch)`` per channel ``[C]`` that ``norm`` uses on ``x``; updates running stats."""
    if not (norm.training or norm.running_mean is None):
        return norm.running_mean, torch.rsqrt(norm.running_var + norm.eps), False
    with torch.no_grad():
        var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)  # [C] each
        if norm.training and norm.track_running_stats:
            norm.num_batches_tracked.add_(1)
            factor = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked)
            count = x.numel() // x.shape[1]
            norm.running_mean.lerp_(mean.to(norm.running_mean.dtype), factor)
            norm.running_var.lerp_((var * (count / max(count - 1, 1))).to(norm.running_var.dtype), factor)
    return mean, torch.rsqrt(var + norm.eps), True


class _FoldedBatchNormConv1x1(torch.autograd.Function):
    """``conv1x1(batch_norm(x))`` with the norm folded into the conv; backward without the normalised map.

    ``y = scale * x + shift`` per channel (``scale = gamma * invstd``, ``shift = beta - mean * scale``),
    ``out = W y + b``. Backward needs only ``x``: ``dW = G * scale + s (x) shift`` with ``G = g_out x^T``
    and ``s = sum g_out``; ``g_y = W^T g_out`` turns into ``dx`` in place (BatchNorm's backward, written
    as ``k1 * g_y + k2 * x + k3`` per channel, all sums taken from ``G`` and ``s``).
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, weight, bias, mean, invstd, from_batch: bool):  # noqa: ANN001
        scale = invstd * gamma  # [C]
        shift = beta - mean * scale  # [C]
        folded = weight * scale.view(1, -1, 1, 1)  # [K, C, 1, 1]
        ctx.save_for_backward(x, gamma, weight, mean, invstd, scale, shift)
        ctx.from_batch = from_batch
        return F.conv2d(x, folded, weight.flatten(1) @ shift + bias)  # [B, K, h, w]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # noqa: ANN001
        x, gamma, weight, mean, invstd, scale, shift = ctx.saved_tensors
        b, c, h, w = x.shape
        k, n = weight.shape[0], b * h * w
        w2d = weight.view(k, c)
        flat_x, flat_g = x.reshape(b, c, h * w), grad_out.reshape(b, k, h * w)
        gram = torch.bmm(flat_g, flat_x.transpose(1, 2)).sum(0)  # [K, C] = sum over pixels g_out x^T
        g_sum = flat_g.sum((0, 2))  # [K]
        gy_sum = w2d.t() @ g_sum  # [C]: sum of g_y
        gy_xhat = invstd * ((w2d * gram).sum(0) - mean * gy_sum)  # [C]: sum of g_y * x_hat
        grad_x = torch.matmul(w2d.t(), flat_g)  # [B, C, h*w] = g_y
        k1 = scale.view(1, c, 1)
        grad_x.mul_(k1)
        if ctx.from_batch:  # the statistics depend on x
            k2 = -scale * invstd * gy_xhat / n  # [C]
            grad_x.addcmul_(flat_x, k2.view(1, c, 1))
            grad_x.add_((-scale * gy_sum / n - k2 * mean).view(1, c, 1))
        grad_weight = (gram * scale + g_sum[:, None] * shift).view_as(weight)
        return grad_x.view(b, c, h, w), gy_xhat, gy_sum, grad_weight, g_sum, None, None, None


def batch_norm_conv1x1(x: torch.Tensor, norm: nn.Module, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(norm(x))`` for ``norm`` a ``BatchNorm2d`` and ``conv`` a 1x1 conv: ``[B, C, h, w] -> [B, K, h, w]``.

    The norm is an affine map per channel (batch statistics in training, running ones in eval, running
    statistics updated as BatchNorm does), so it folds into the conv (``_FoldedBatchNormConv1x1``): the
    normalised map is neither written nor kept. Other norms or convs, affine-less norms, and reduced
    precision or autocast (bf16 statistics would lose precision) take ``conv(norm(x))``.
    """
    foldable = type(norm) is nn.BatchNorm2d and norm.affine and conv.kernel_size == (1, 1)
    foldable = foldable and conv.groups == 1 and conv.bias is not None and x.dtype in FOLDABLE_DTYPES
    if not foldable or torch.is_autocast_enabled(x.device.type):
        return conv(norm(x))
    mean, invstd, from_batch = _batch_statistics(x, norm)
    return _FoldedBatchNormConv1x1.apply(
        x, norm.weight, norm.bias, conv.weight, conv.bias, mean, invstd, from_batch
    )  # [B, K, h, w]


class UpBlock(nn.Sequential):
    """``ConvTranspose2d(k=2, s=2) + GroupNorm + GELU``: ``[B, C_in, h, w] -> [B, C_out, 2h, 2w]``.

    When gradients are needed, ``GELU(GroupNorm(.))`` runs under ``torch.utils.checkpoint``: the
    normalised map (GELU's input) is recomputed in backward instead of kept, one map fewer at 2x / 4x
    resolution for the price of recomputing two element-wise layers. Values and gradients are unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(PixelUpsample2x(in_channels, out_channels), group_norm(out_channels), nn.GELU())

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return self[2](self[1](x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self[0](x)  # [B, C_out, 2h, 2w]
        if torch.is_grad_enabled() and x.requires_grad:
            return checkpoint(self._normalise, x, use_reentrant=False)
        return self._normalise(x)


def up_block(in_channels: int, out_channels: int) -> UpBlock:
    """``ConvTranspose2d(k=2, s=2) + GroupNorm + GELU`` (``UpBlock``)."""
    return UpBlock(in_channels, out_channels)


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
        return batch_norm_conv1x1(self.upsample(x), self.norm, self.classifier)  # [B, K, 4h, 4w]


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
