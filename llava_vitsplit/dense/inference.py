"""Whole-image and sliding-window inference for dense heads."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.nn import functional as F

Predictor = Callable[[torch.Tensor], torch.Tensor]


def slide_inference(
    predict: Predictor, image: torch.Tensor, crop: tuple[int, int], stride: tuple[int, int]
) -> torch.Tensor:
    """Average ``predict`` over overlapping ``crop`` windows at ``stride``: ``[B, 3, H, W] -> [B, K, H, W]``.

    Images smaller than the crop are run whole. ``predict`` maps ``[B, 3, h, w] -> [B, K, h, w]``.
    """
    _, _, height, width = image.shape
    ch, cw = min(crop[0], height), min(crop[1], width)
    sh, sw = stride
    if sh < 1 or sw < 1:
        raise ValueError(f"slide stride must be positive, got {stride}")
    rows = max(math.ceil((height - ch) / sh), 0) + 1
    cols = max(math.ceil((width - cw) / sw), 0) + 1
    total: torch.Tensor | None = None
    count = torch.zeros(1, 1, height, width, device=image.device)
    for r in range(rows):
        for c in range(cols):
            y0 = min(r * sh, height - ch)
            x0 = min(c * sw, width - cw)
            out = predict(image[:, :, y0 : y0 + ch, x0 : x0 + cw]).float()  # [B, K, ch, cw]
            if total is None:
                total = image.new_zeros(image.shape[0], out.shape[1], height, width, dtype=torch.float32)
            total[:, :, y0 : y0 + ch, x0 : x0 + cw] += out
            count[:, :, y0 : y0 + ch, x0 : x0 + cw] += 1
    assert total is not None
    return total / count  # [B, K, H, W]


def predict_resized(
    predict: Predictor,
    image: torch.Tensor,
    out_size: tuple[int, int],
    crop: tuple[int, int] | None = None,
    stride: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Whole or sliding-window prediction on ``image``, resized (bilinear) to ``out_size``: ``[B, K, *out_size]``."""
    if stride is not None and crop is not None:
        pred = slide_inference(predict, image, crop, stride)
    else:
        pred = predict(image).float()
    if tuple(pred.shape[-2:]) != tuple(out_size):
        pred = F.interpolate(pred, size=out_size, mode="bilinear", align_corners=False)
    return pred
