"""Training losses: cross-entropy with an ignore index (segmentation) and SigLoss (depth)."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Pixel cross-entropy: ``logits [B, K, H, W]`` against ``labels [B, H, W]`` (``ignore_index`` skipped)."""
    return F.cross_entropy(logits.float(), labels.long(), ignore_index=ignore_index)


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
