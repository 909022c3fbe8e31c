"""Dense models: one frozen backbone pass feeding one or several ViT-Split task branches.

A ``TaskBranch`` is a ``ViTSplitAdapter`` (the shared implementation in ``llava_vitsplit.adapter``)
plus a task head. ``DenseModel`` runs the frozen backbone once and every branch on its hidden states,
so segmentation and depth (or several segmentation label sets) are predicted from a single frozen pass.
Predictions are resized to the padded input and cropped back to the input size.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from llava_vitsplit.adapter import ViTSplitAdapter
from llava_vitsplit.backbones.base import BackboneOutput, FrozenBackbone

TASKS = ("segmentation", "depth", "detection")


class TaskBranch(nn.Module):
    """``adapter`` + ``head``: ``BackboneOutput -> [B, K, H, W]`` (K classes, or 1 for depth)."""

    def __init__(self, task: str, adapter: ViTSplitAdapter, head: nn.Module) -> None:
        super().__init__()
        if task not in ("segmentation", "depth"):
            raise ValueError(f"a dense branch is 'segmentation' or 'depth', got {task!r}")
        self.task = task
        self.adapter = adapter
        self.head = head

    def forward(self, features: BackboneOutput, norm: nn.Module | None, patch_size: int) -> torch.Tensor:
        fused = self.adapter(features.hidden_states, features.grid_hw, norm=norm)  # [B, C, h, w]
        pred = self.head(fused)  # [B, K, 4h, 4w]
        gh, gw = features.grid_hw
        pred = F.interpolate(
            pred, size=(gh * patch_size, gw * patch_size), mode="bilinear", align_corners=False
        )
        height, width = features.input_hw
        return pred[..., :height, :width]  # [B, K, H, W]


class DenseModel(nn.Module):
    """Frozen ``backbone`` + named ``branches``; ``forward(pixels [B, 3, H, W]) -> {name: [B, K, H, W]}``."""

    def __init__(self, backbone: FrozenBackbone, branches: Mapping[str, TaskBranch]) -> None:
        super().__init__()
        if not branches:
            raise ValueError("a dense model needs at least one task branch")
        self.backbone = backbone
        self.branches = nn.ModuleDict(dict(branches))

    def train(self, mode: bool = True) -> DenseModel:
        super().train(mode)
        self.backbone.train(False)
        return self

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(pixel_values)  # h[0..L], one frozen pass
        return {
            name: branch(features, self.backbone.norm, self.backbone.patch_size)
            for name, branch in self.branches.items()
        }

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights and buffers of the branches only (the frozen backbone is loaded from its source)."""
        return {f"branches.{k}": v for k, v in self.branches.state_dict().items()}

    def task_head_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the copied blocks (the task heads), which get the lr multiplier."""
        for branch in self.branches.values():
            yield from branch.adapter.task_head.parameters()
