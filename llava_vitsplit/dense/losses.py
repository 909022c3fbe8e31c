"""Training losses: cross-entropy with an ignore index (segmentation) and SigLoss (depth).

``segmentation_loss`` on an ``UnresizedPrediction`` (a model's ``forward(..., resize=False)``) is the
cross-entropy of its bilinear resize to the input, computed in bands of output rows: each band is resized,
scored and differentiated at once (its gradient with respect to the head's low-resolution map is kept),
so neither the full-resolution logits nor their log-softmax and gradients are ever held whole. Values
and gradients equal ``segmentation_loss(pred.resized(), labels)`` to float tolerance.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from llava_vitsplit.dense.model import Prediction, UnresizedPrediction

BAND_ELEMENTS = 1 << 22  # full-resolution logits per band (16 MiB in float32)


def segmentation_loss(logits: Prediction, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Pixel cross-entropy: ``logits [B, K, H, W]`` against ``labels [B, H, W]`` (``ignore_index`` skipped).

    ``logits`` may also be an ``UnresizedPrediction``: then the loss of its resize, in bands (see above).
    """
    if isinstance(logits, UnresizedPrediction):
        return BandedResizeCrossEntropy.apply(logits.pred, labels.long(), logits, ignore_index)
    return F.cross_entropy(logits.float(), labels.long(), ignore_index=ignore_index)


def _row_sources(
    out_rows: int, in_rows: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear source rows ``(i0, i1, weight of i1)`` of each output row (``align_corners=False``).

    The rule of ``upsample_bilinear2d`` with ``scale`` = output / input size: source
    ``(y + 0.5) / scale - 0.5`` clamped at 0, its two neighbours (the last row repeats at the edge).
    """
    src = ((torch.arange(out_rows, dtype=torch.float64) + 0.5) / scale - 0.5).clamp_min(0.0)  # [H]
    i0 = src.floor().long().clamp_max(in_rows - 1)
    return i0, (i0 + 1).clamp_max(in_rows - 1), src - i0


def _band_loss(
    window: torch.Tensor, rows, labels: torch.Tensor, width: int, scale_w: float, ignore_index: int
):
    """Summed cross-entropy of one band: ``window [B, K, r, w]`` low-res rows -> ``[B, K, R, W]`` logits."""
    i0, i1, weight = rows  # [R] each, relative to the window
    weight = weight.to(window.dtype).view(1, 1, -1, 1)
    band = window.index_select(2, i0) * (1 - weight) + window.index_select(2, i1) * weight  # [B, K, R, w]
    b, k, r, w = band.shape
    band = torch.ops.aten.upsample_linear1d(band.reshape(b, k * r, w), [width], False, scale_w)
    band = band.view(b, k, r, width)  # [B, K, R, W]
    return F.cross_entropy(band, labels, ignore_index=ignore_index, reduction="sum")


class BandedResizeCrossEntropy(torch.autograd.Function):
    """``F.cross_entropy(resize_to_input(pred), labels)`` band by band; the gradient is made in forward."""

    @staticmethod
    def forward(ctx, pred, labels, geometry: UnresizedPrediction, ignore_index: int):  # noqa: ANN001
        (grid_h, grid_w), (height, width) = geometry.grid_hw, geometry.input_hw
        # padded input size / head size, as resize_to_input passes them to upsample_bilinear2d
        scale_h = grid_h * geometry.patch_size / pred.shape[-2]
        scale_w = grid_w * geometry.patch_size / pred.shape[-1]
        i0, i1, weight = _row_sources(height, pred.shape[-2], scale_h)
        work = pred.detach().to(torch.promote_types(pred.dtype, torch.float32))  # [B, K, s*h, s*w]
        grad = torch.zeros_like(work) if ctx.needs_input_grad[0] else None
        total = work.new_zeros(())
        b, k = pred.shape[:2]
        band_rows = max(1, BAND_ELEMENTS // (b * k * width))
        with torch.autocast(pred.device.type, enabled=False), torch.enable_grad():
            for top in range(0, height, band_rows):
                rows = slice(top, min(top + band_rows, height))
                first, last = int(i0[rows].min()), int(i1[rows].max()) + 1
                window = work[:, :, first:last].detach().requires_grad_(grad is not None)  # [B, K, r, s*w]
                local = tuple(t.to(pred.device) for t in (i0[rows] - first, i1[rows] - first, weight[rows]))
                loss = _band_loss(window, local, labels[:, rows], width, scale_w, ignore_index)
                if grad is not None:
                    grad[:, :, first:last] += torch.autograd.grad(loss, window)[0]
                total += loss.detach()
        count = (labels != ignore_index).sum()
        ctx.grad = None if grad is None else (grad / count).to(pred.dtype)
        return total / count

    @staticmethod
    def backward(ctx, grad_output):  # noqa: ANN001
        grad, ctx.grad = ctx.grad, None
        return grad * grad_output.to(grad.dtype), None, None, None


def sig_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    min_depth: float = 1e-3,
    max_depth: float | None = None,
    variance_focus: float = 0.85,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Scale-invariant log loss ``sqrt(mean(g^2) - lambda * mean(g)^2)``, ``g = log(pred) - log(target)``.

    ``pred``/``target`` are ``[B, 1, H, W]`` or ``[B, H, W]`` depths; pixels with ``target <= min_depth``
    (or above ``max_depth``) are invalid. ``lambda = variance_focus`` (0.85 as in Eigen et al.).
    """
    pred = pred.float().reshape(target.shape)
    valid = target > min_depth
    if max_depth is not None:
        valid &= target <= max_depth
    if not bool(valid.any()):
        return pred.sum() * 0.0
    g = torch.log(pred[valid].clamp_min(eps)) - torch.log(target[valid].float())
    value = (g * g).mean() - variance_focus * g.mean() ** 2
    return torch.sqrt(value.clamp_min(0.0) + eps)
