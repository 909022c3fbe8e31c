"""``ViTSplitAdapter``: task head + prior head (+ optional sparse gate) + fusion net.

Input: the frozen tower's hidden states ``h[0] .. h[E]`` for its *effective* depth ``E`` (for LLaVA,
CLIP-L with feature layer -2 has ``E = 23``), each ``[B, P + h*w, C]`` where ``P`` is the number of
prefix tokens (CLS and registers; 0 for SigLIP). Output: the fused map ``[B, C_out, h, w]``.

- Task head input ``h[E - K_t]`` is detached: no gradient reaches the frozen tower.
- ``task_head_keeps_prefix=True`` runs the prefix tokens through the copied blocks and drops them
  afterwards, so at initialisation the task head output equals the frozen ``h[E]``;
  ``False`` drops them first (the released LLaVA code).
- An optional ``norm`` (e.g. DINOv2's final LayerNorm, owned by the frozen tower and not trained here)
  is applied to the task-head output and every prior feature before the prefix is dropped.
- Prior features are block outputs ``h[i + 1]`` for the selected indices ``i`` (prefix dropped),
  concatenated on channels in index order, or, for the sparse gate, a learned mixture of all
  ``E`` block outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from llava_vitsplit.adapter.config import AdapterConfig
from llava_vitsplit.adapter.heads import FusionNet, PriorHead
from llava_vitsplit.adapter.layer_selection import SparseLayerGate, uniform_layer_indices
from llava_vitsplit.adapter.task_head import TaskHead

Norm = Callable[[torch.Tensor], torch.Tensor]


def tokens_to_map(tokens: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """``[B, h*w, C]`` patch tokens (row-major) -> ``[B, C, h, w]`` map."""
    b, n, c = tokens.shape
    h, w = grid_hw
    if n != h * w:
        raise ValueError(f"got {n} patch tokens, expected {h}x{w}={h * w} for the patch grid")
    return tokens.transpose(1, 2).reshape(b, c, h, w)


def resolve_prior_layers(config: AdapterConfig, num_layers: int) -> list[int]:
    """Block-output indices the prior head reads (all ``E`` blocks for the sparse gate)."""
    if config.prior_selection == "sparse_gate":
        return list(range(num_layers))
    if config.prior_selection == "uniform":
        return uniform_layer_indices(
            num_layers, config.num_prior_layers, config.prior_start, config.uniform_rounding
        )
    bad = [i for i in config.prior_layers if not 0 <= i < num_layers]
    if bad:
        raise ValueError(
            f"prior_layers {bad} out of range for a tower of {num_layers} effective blocks (0..{num_layers - 1})"
        )
    return list(config.prior_layers)


class ViTSplitAdapter(nn.Module):
    """Trainable ViT-Split heads over a frozen tower with ``num_layers`` effective blocks of width ``channels``.

    Args:
        config: the adapter's settings.
        tower_blocks: the frozen tower's effective blocks (all ``E`` of them, or at least the last
            ``K_t``); the task head deep-copies the last ``K_t``.
        num_layers: ``E``, the effective depth (blocks actually run).
        channels: ``C``, the tower width.
        num_prefix_tokens: ``P``, tokens before the patch grid (CLS + registers).
    """

    def __init__(
        self,
        config: AdapterConfig,
        tower_blocks: Sequence[nn.Module],
        num_layers: int,
        channels: int,
        num_prefix_tokens: int,
    ) -> None:
        super().__init__()
        self.config = config
        self.num_layers = num_layers
        self.channels = channels
        self.num_prefix_tokens = num_prefix_tokens
        k_t = config.num_task_layers
        if k_t > num_layers:
            raise ValueError(f"K_t={k_t} task-head blocks exceed the tower's {num_layers} effective blocks")
        if len(tower_blocks) < k_t:
            raise ValueError(f"need at least K_t={k_t} tower blocks to copy, got {len(tower_blocks)}")
        self.prior_layers = resolve_prior_layers(config, num_layers)
        self.out_channels = config.fusion_channels or channels

        self.task_head = TaskHead(list(tower_blocks)[-k_t:])
        if config.prior_selection == "sparse_gate":
            self.prior_gate: SparseLayerGate | None = SparseLayerGate(
                num_layers, config.num_prior_layers, config.gate_top_k, config.gate_temperature
            )
            num_prior_maps = config.num_prior_layers
        else:
            self.prior_gate = None
            num_prior_maps = len(self.prior_layers)
        self.prior_head = PriorHead(num_prior_maps, channels, config.conv_type)
        self.fusion = FusionNet(channels, self.out_channels, config.conv_type)

    @property
    def task_input_index(self) -> int:
        """Hidden-state index fed to the task head: ``E - K_t``."""
        return self.num_layers - self.config.num_task_layers

    def _patch_map(self, tokens: torch.Tensor, grid_hw: tuple[int, int], norm: Norm | None) -> torch.Tensor:
        if norm is not None:
            tokens = norm(tokens)
        return tokens_to_map(tokens[:, self.num_prefix_tokens :], grid_hw)  # [B, C, h, w]

    def task_features(
        self, hidden_states: Sequence[torch.Tensor], grid_hw: tuple[int, int], norm: Norm | None = None
    ) -> torch.Tensor:
        """Task-head map ``[B, C, h, w]`` from the detached ``h[E - K_t]``."""
        x = hidden_states[self.task_input_index].detach()  # [B, P + h*w, C]
        if self.config.task_head_keeps_prefix:
            return self._patch_map(self.task_head(x), grid_hw, norm)
        x = self.task_head(x[:, self.num_prefix_tokens :])  # [B, h*w, C]
        if norm is not None:
            x = norm(x)
        return tokens_to_map(x, grid_hw)

    def prior_features(
        self, hidden_states: Sequence[torch.Tensor], grid_hw: tuple[int, int], norm: Norm | None = None
    ) -> torch.Tensor:
        """Prior-head map ``[B, C, h, w]`` from the selected frozen block outputs."""
        maps = [self._patch_map(hidden_states[i + 1].detach(), grid_hw, norm) for i in self.prior_layers]
        if self.prior_gate is not None:
            stacked = self.prior_gate(torch.stack(maps))  # [B, K_p*C, h, w]
        else:
            stacked = torch.cat(maps, dim=1)  # [B, K_p*C, h, w]
        return self.prior_head(stacked)

    def forward(
        self, hidden_states: Sequence[torch.Tensor], grid_hw: tuple[int, int], norm: Norm | None = None
    ) -> torch.Tensor:
        """Fused map ``[B, C_out, h, w]`` from hidden states ``h[0..E]`` (each ``[B, P + h*w, C]``)."""
        if len(hidden_states) < self.num_layers + 1:
            raise ValueError(
                f"expected {self.num_layers + 1} hidden states (embeddings + {self.num_layers} blocks), got {len(hidden_states)}"
            )
        task = self.task_features(hidden_states, grid_hw, norm)  # [B, C, h, w]
        prior = self.prior_features(hidden_states, grid_hw, norm)  # [B, C, h, w]
        return self.fusion(prior, task)  # [B, C_out, h, w]
