"""Training losses: cross-entropy with an ignore index (segmentation) and SigLoss (depth).

``segmentation_loss`` on an ``UnresizedPrediction`` (a model's ``forward(..., resize=False)``) is the
cross-entropy of its bilinear resize to the input, computed in bands of output rows: each band is resized
(channels-last: rows by a small matmul, columns by bag gathers), scored (class-last) and
differentiated at once (its gradient with respect to the head's low-resolution map is kept),
so neither the full-resolution logits nor their log-softmax and gradients are ever held whole. Values
and gradients equal ``segmentation_loss(pred.resized(), labels)`` to float tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from llava_vitsplit.dense.model import Prediction, UnresizedPrediction

BAND_ELEMENTS = 1 << 22  # full-resolution logits per band of rows over the batch (each image scored alone)


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


@dataclass(frozen=True)
class _Band:
    """One band of output rows, read from input rows ``first:last`` of every image."""

    mix: torch.Tensor  # [R, r]: output rows from the window's input rows
    first: int
    last: int
    col_index: torch.Tensor  # [R*W, 2]: the two source pixels of each output pixel, into [R*w, K]
    col_weight: torch.Tensor  # [R*W, 2]
    t_index: torch.Tensor  # [R*2W]: output pixels grouped by the source pixel they read
    t_offsets: torch.Tensor  # [R*w]: start of each source pixel's group
    t_weight: torch.Tensor  # [R*2W]


class _Resize:
    """The bilinear resize of a ``[h, w, K]`` channels-last map to ``[H, W, K]``, row band by row band.

    Rows are a small dense matmul (each output row mixes two input rows); columns are bag gathers
    (``F.embedding_bag``, each output pixel mixes two pixels of its row). The transposed resize (for the
    gradient) is the same two steps backwards: columns as bags grouped by source column, rows as a matmul.
    """

    def __init__(self, row_src, col_src, in_cols: int, dtype: torch.dtype, device: torch.device) -> None:
        self.row_src = row_src  # (i0, i1, weight of i1) per output row
        self.in_cols, self.out_cols = in_cols, len(col_src[0])
        self.dtype, self.device = dtype, device
        c0, c1, wc = (t.to(device) for t in col_src)
        self.col_index = torch.stack([c0, c1], dim=-1)  # [W, 2]
        self.col_weight = torch.stack([1 - wc, wc], dim=-1).to(dtype)  # [W, 2]
        # transposed: the output columns reading each source column, grouped by source column
        sources = self.col_index.t().reshape(-1)  # [2W]
        order = torch.argsort(sources, stable=True)
        self.t_columns = torch.arange(self.out_cols, device=device).repeat(2)[order]  # [2W]
        self.t_weight = self.col_weight.t().reshape(-1)[order]  # [2W]
        counts = torch.bincount(sources, minlength=in_cols)  # [w]
        self.t_offsets = torch.cumsum(counts, 0) - counts  # [w]: start of each source column's group

    def band(self, rows: slice) -> _Band:
        """The mixing matrix and gather indices of output rows ``rows`` (the same for every image)."""
        i0, i1, weight = (t[rows] for t in self.row_src)
        first, last = int(i0.min()), int(i1.max()) + 1
        mix = torch.zeros(len(i0), last - first, dtype=torch.float64)
        span = torch.arange(len(i0))
        mix.index_put_((span, i0 - first), 1 - weight, accumulate=True)
        mix.index_put_((span, i1 - first), weight, accumulate=True)
        span = torch.arange(len(i0), device=self.device).view(-1, 1)
        return _Band(
            mix=mix.to(device=self.device, dtype=self.dtype),
            first=first,
            last=last,
            col_index=(span.view(-1, 1, 1) * self.in_cols + self.col_index).view(-1, 2),
            col_weight=self.col_weight.expand(len(i0), -1, -1).reshape(-1, 2),
            t_index=(span * self.out_cols + self.t_columns).view(-1),
            t_offsets=(span * len(self.t_columns) + self.t_offsets).view(-1),
            t_weight=self.t_weight.repeat(len(i0)),
        )

    def forward(self, window: torch.Tensor, band: _Band) -> torch.Tensor:
        """``window [r, w, K]`` -> logits ``[R*W, K]``."""
        r, w, k = window.shape
        rows = (band.mix @ window.view(r, w * k)).view(-1, k)  # [R*w, K]
        return F.embedding_bag(band.col_index, rows, per_sample_weights=band.col_weight, mode="sum")

    def backward(self, grad_logits: torch.Tensor, band: _Band) -> torch.Tensor:
        """Transposed resize: ``grad_logits [R*W, K]`` -> ``[r, w, K]``."""
        k = grad_logits.shape[1]
        cols = F.embedding_bag(
            band.t_index, grad_logits, band.t_offsets, per_sample_weights=band.t_weight, mode="sum"
        )  # [R*w, K]
        return (band.mix.t() @ cols.view(band.mix.shape[0], -1)).view(-1, self.in_cols, k)  # [r, w, K]


def _cross_entropy_sum(logits: torch.Tensor, target: torch.Tensor, ignore_index: int, need_grad: bool):
    """Summed cross-entropy of ``logits [P, K]`` and, if asked, its gradient ``softmax - one_hot`` (0 if ignored)."""
    valid = target != ignore_index  # [P]
    safe = target.where(valid, 0).unsqueeze(1)  # [P, 1]
    logp = torch.log_softmax(logits, dim=1)  # [P, K]
    loss = -(logp.gather(1, safe).squeeze(1) * valid).sum()
    if not need_grad:
        return loss, None
    grad = logp.exp_()  # softmax, in place
    grad.scatter_add_(1, safe, -valid.unsqueeze(1).to(grad.dtype))
    if not bool(valid.all()):
        grad.mul_(valid.unsqueeze(1))
    return loss, grad


class BandedResizeCrossEntropy(torch.autograd.Function):
    """``F.cross_entropy(resize_to_input(pred), labels)`` band by band; the gradient is made in forward.

    Per image and band of output rows: the channels-last window of head rows the band reads is resized
    (``_Resize``), scored with class-last cross-entropy ``[R*W, K]`` whose gradient is written directly
    (``softmax - one_hot``), and that gradient is resized back into a channels-last buffer.
    """

    @staticmethod
    def forward(ctx, pred, labels, geometry: UnresizedPrediction, ignore_index: int):  # noqa: ANN001
        (grid_h, grid_w), (height, width) = geometry.grid_hw, geometry.input_hw
        b, k, in_rows, in_cols = pred.shape
        need_grad = ctx.needs_input_grad[0]
        work = pred.detach().permute(0, 2, 3, 1).to(torch.promote_types(pred.dtype, torch.float32))
        work = work.contiguous()  # [B, s*h, s*w, K], channels last
        # padded input size / head size, as resize_to_input passes them to upsample_bilinear2d
        resize = _Resize(
            _row_sources(height, in_rows, grid_h * geometry.patch_size / in_rows),
            _row_sources(width, in_cols, grid_w * geometry.patch_size / in_cols),
            in_cols,
            work.dtype,
            work.device,
        )
        grad = torch.zeros_like(work) if need_grad else None
        total = work.new_zeros(())
        band_rows = max(1, BAND_ELEMENTS // (b * k * width))
        with torch.autocast(pred.device.type, enabled=False):  # the loss runs in float32 (or float64)
            for top in range(0, height, band_rows):
                rows = slice(top, min(top + band_rows, height))
                band = resize.band(rows)
                for i in range(b):
                    logits = resize.forward(work[i, band.first : band.last], band)  # [R*W, K]
                    target = labels[i, rows].reshape(-1)
                    loss, grad_logits = _cross_entropy_sum(logits, target, ignore_index, need_grad)
                    if grad is not None:
                        grad[i, band.first : band.last] += resize.backward(grad_logits, band)
                    total += loss
        count = (labels != ignore_index).sum()
        ctx.grad = None if grad is None else grad.div_(count).to(pred.dtype).permute(0, 3, 1, 2)
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
