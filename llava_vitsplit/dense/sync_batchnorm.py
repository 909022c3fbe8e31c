"""BatchNorm synchronised across processes, on CPU (gloo) as on GPU: the released ``norm_cfg = dict(type="SyncBN")``.

``torch.nn.SyncBatchNorm`` refuses CPU tensors ("expected input tensor to be on GPU"), so ``dense-train``
on several CPU processes could not synchronise with it. ``SyncBatchNorm2d`` is a ``BatchNorm2d`` (same
parameters, buffers and state-dict keys) whose training-mode statistics are those of the global batch:

- forward: each process's per-channel mean, biased variance and pixel count are all-gathered and merged
  (``mean = sum n_i m_i / N``, ``var = sum n_i (v_i + (m_i - mean)^2) / N``); the running statistics are
  updated with them as BatchNorm does (unbiased variance over ``N``);
- backward: the per-channel sums ``sum g`` and ``sum g * x_hat`` that the input gradient needs are
  all-reduced (summed), so each process gets the gradient of the sum of all processes' losses; the
  weight and bias gradients stay this process's own sums (DDP averages them, as for any parameter).

Outside training, or in a single process (no process group, or a world of one), it is ``BatchNorm2d``
itself, so single-process runs do not change. ``batch_norm_conv1x1`` (``dense.heads``) folds a
``SyncBatchNorm2d`` into the following 1x1 conv with the same global statistics and sums.
``convert_sync_batchnorm`` swaps every ``BatchNorm2d`` of a model, reusing its parameters and buffers.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def synchronising() -> bool:
    """A process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def global_statistics(x: torch.Tensor, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(mean, biased var, N)`` per channel ``[C]`` over every process's ``x [B, C, h, w]``; updates
    ``norm``'s running statistics (in training) as BatchNorm does. Statistics in float32 (or float64)."""
    channels = x.shape[1]
    dtype = torch.promote_types(
        norm.weight.dtype if norm.weight is not None else torch.float32, torch.float32
    )
    with torch.no_grad():
        blank = (
            torch.zeros(channels, dtype=dtype, device=x.device),
            torch.ones(channels, dtype=dtype, device=x.device),
        )
        mean, var = torch.batch_norm_update_stats(x, *blank, 0.0)  # [C] each, this process, biased
        count = torch.full((1,), x.numel() // channels, dtype=dtype, device=x.device)
        packed = torch.cat([mean.to(dtype), var.to(dtype), count])  # [2C + 1]
        gathered = [torch.empty_like(packed) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, packed)
        table = torch.stack(gathered)  # [P, 2C + 1]
        means, variances, counts = table[:, :channels], table[:, channels:-1], table[:, -1:]
        total = counts.sum()
        mean = (counts * means).sum(0) / total  # [C]
        var = (counts * (variances + (means - mean) ** 2)).sum(0) / total  # [C]
        if norm.track_running_stats and norm.running_mean is not None:
            norm.num_batches_tracked.add_(1)
            factor = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked)
            unbiased = var * total / (total - 1).clamp(min=1)
            norm.running_mean.mul_(1 - factor).add_(mean.to(norm.running_mean.dtype), alpha=factor)
            norm.running_var.mul_(1 - factor).add_(unbiased.to(norm.running_var.dtype), alpha=factor)
    return mean, var, int(total.item())


def all_reduce_sums(*sums: torch.Tensor) -> list[torch.Tensor]:
    """Each ``[C]`` tensor summed over the processes (one all-reduce)."""
    packed = torch.cat(sums)
    dist.all_reduce(packed)
    return list(packed.split([s.numel() for s in sums]))


class _SyncBatchNorm(torch.autograd.Function):
    """``(x - mean) * invstd * gamma + beta`` with global statistics; backward with global sums."""

    @staticmethod
    def forward(ctx, x, gamma, beta, mean, invstd, count: int):  # noqa: ANN001
        shape = (1, -1, 1, 1)
        x_hat = (x.to(mean.dtype) - mean.view(shape)) * invstd.view(shape)  # [B, C, h, w]
        ctx.save_for_backward(x, gamma, mean, invstd)
        ctx.count = count
        return x_hat * gamma.view(shape) + beta.view(shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # noqa: ANN001
        x, gamma, mean, invstd = ctx.saved_tensors
        shape = (1, -1, 1, 1)
        grad_out = grad_out.to(mean.dtype)
        x_hat = (x.to(mean.dtype) - mean.view(shape)) * invstd.view(shape)  # [B, C, h, w]
        g_sum = grad_out.sum((0, 2, 3))  # [C], this process
        g_xhat = (grad_out * x_hat).sum((0, 2, 3))  # [C], this process
        total_g, total_g_xhat = all_reduce_sums(g_sum, g_xhat)
        grad_x = grad_out - (total_g / ctx.count).view(shape) - x_hat * (total_g_xhat / ctx.count).view(shape)
        grad_x = grad_x * (gamma * invstd).view(shape)
        return grad_x.to(x.dtype), g_xhat.to(gamma.dtype), g_sum.to(gamma.dtype), None, None, None


class SyncBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` with global-batch statistics when training on several processes (module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and synchronising()):
            return super().forward(x)
        mean, var, count = global_statistics(x, self)
        weight, bias = (
            (self.weight, self.bias) if self.affine else (torch.ones_like(mean), torch.zeros_like(mean))
        )
        return _SyncBatchNorm.apply(x, weight, bias, mean, torch.rsqrt(var + self.eps), count)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with each ``BatchNorm2d`` replaced by a ``SyncBatchNorm2d`` holding the same tensors."""
    if type(module) is nn.BatchNorm2d:
        synced = SyncBatchNorm2d(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        for name in ("weight", "bias"):
            if module.affine:
                setattr(synced, name, getattr(module, name))  # the same Parameter objects
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            if module.track_running_stats:
                setattr(synced, name, getattr(module, name))
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        converted = convert_sync_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module
