"""Choosing which frozen blocks feed the prior head: uniform sampling or a learned sparse gate."""

from __future__ import annotations

import math

import torch
from torch import nn


def uniform_layer_indices(num_layers: int, num_prior: int, start: int, rounding: str = "round") -> list[int]:
    """Block-output indices S = { b + rnd(i * (L - 1 - b) / (K_p - 1)) : i = 0..K_p-1 }.

    ``rounding="round"`` rounds half away from zero as the paper's formula reads; ``"floor"`` truncates
    like the released code's ``int()``. With ``K_p == 1`` the single index is ``L - 1`` (the last block).

    >>> uniform_layer_indices(12, 4, 2)
    [2, 5, 8, 11]
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    if not 0 <= start < num_layers:
        raise ValueError(
            f"prior_start b={start} must lie in [0, {num_layers - 1}] for a {num_layers}-block tower"
        )
    if num_prior < 1:
        raise ValueError(f"num_prior (K_p) must be >= 1, got {num_prior}")
    if num_prior == 1:
        return [num_layers - 1]
    step = (num_layers - 1 - start) / (num_prior - 1)
    if rounding == "round":
        indices = [start + math.floor(i * step + 0.5) for i in range(num_prior)]
    elif rounding == "floor":
        indices = [start + int(i * step) for i in range(num_prior)]
    else:
        raise ValueError(f"rounding must be 'round' or 'floor', got {rounding!r}")
    if len(set(indices)) != len(indices):
        raise ValueError(
            f"K_p={num_prior} prior layers from b={start} on a {num_layers}-block tower repeat a layer: {indices}"
        )
    return indices


class SparseLayerGate(nn.Module):
    """Learned top-k mixture of all block outputs into ``num_slots`` prior slots (paper appendix B.1).

    Scores ``G`` are ``[L, num_slots]``. Per column: softmax over layers at ``temperature``, keep the
    ``top_k`` largest entries, renormalise them, and pass gradients straight through to the dense
    softmax (``gates = sparse - dense.detach() + dense``).
    """

    def __init__(self, num_layers: int, num_slots: int, top_k: int = 4, temperature: float = 0.5) -> None:
        super().__init__()
        if not 1 <= top_k <= num_layers:
            raise ValueError(f"gate top_k must lie in [1, {num_layers}], got {top_k}")
        self.num_layers = num_layers
        self.num_slots = num_slots
        self.top_k = top_k
        self.temperature = temperature
        self.scores = nn.Parameter(torch.zeros(num_layers, num_slots))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.scores, std=0.02)

    def gates(self) -> torch.Tensor:
        """Sparse, renormalised gate matrix ``[L, num_slots]`` with straight-through gradients."""
        dense = torch.softmax(self.scores.float() / self.temperature, dim=0)  # [L, S]
        top = dense.topk(self.top_k, dim=0).indices  # [k, S]
        mask = torch.zeros_like(dense).scatter_(0, top, 1.0)
        sparse = dense * mask
        sparse = sparse / sparse.sum(dim=0, keepdim=True).clamp_min(1e-12)
        return sparse - dense.detach() + dense

    def forward(self, layer_maps: torch.Tensor) -> torch.Tensor:
        """Mix ``[L, B, C, h, w]`` layer maps into ``[B, num_slots * C, h, w]``."""
        if layer_maps.shape[0] != self.num_layers:
            raise ValueError(f"sparse gate expects {self.num_layers} layer maps, got {layer_maps.shape[0]}")
        gates = self.gates().to(layer_maps.dtype)  # [L, S]
        mixed = torch.einsum("ls,lbchw->bschw", gates, layer_maps)  # [B, S, C, h, w]
        return mixed.flatten(1, 2)  # [B, S*C, h, w]
