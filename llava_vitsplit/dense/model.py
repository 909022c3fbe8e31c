"""Dense models: one frozen backbone pass feeding one or several ViT-Split task branches.

A ``TaskBranch`` is a ``ViTSplitAdapter`` (the shared implementation in ``llava_vitsplit.adapter``)
plus a task head. ``DenseModel`` runs the frozen backbone once and every branch on its hidden states,
so segmentation and depth (or several segmentation label sets) are predicted from a single frozen pass.
Predictions are resized to the padded input and cropped back to the input size; ``forward(...,
resize=False)`` returns them unresized (``UnresizedPrediction``), so a loss can resize them piece by piece
(``losses.segmentation_loss``) instead of holding the full-resolution map.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from llava_vitsplit.adapter import ViTSplitAdapter
from llava_vitsplit.backbones.base import BackboneOutput, FrozenBackbone


def resize_to_input(
    pred: torch.Tensor, grid_hw: tuple[int, int], patch_size: int, input_hw: tuple[int, int]
) -> torch.Tensor:
    """Bilinearly resize ``[B, K, s*h, s*w]`` to the padded input ``[B, K, h*p, w*p]``, cropped to ``input_hw``.

    Equal to ``F.interpolate(pred, size=(h*p, w*p), mode="bilinear")[..., :H, :W]``, but computed for the
    kept pixels only: the resize op is given the padded size's scale factors and the cropped output size,
    so no full-size map is made, cropped and copied (forward and backward).
    """
    (grid_h, grid_w), (height, width) = grid_hw, input_hw
    scale_h = grid_h * patch_size / pred.shape[-2]
    scale_w = grid_w * patch_size / pred.shape[-1]
    return torch.ops.aten.upsample_bilinear2d(pred, [height, width], False, scale_h, scale_w)  # [B, K, H, W]


@dataclass(frozen=True)
class UnresizedPrediction:
    """A head's output ``pred [B, K, s*h, s*w]`` before ``resize_to_input`` (and what that resize needs)."""

    pred: torch.Tensor
    grid_hw: tuple[int, int]
    patch_size: int
    input_hw: tuple[int, int]

    def resized(self) -> torch.Tensor:
        """``[B, K, H, W]``: the prediction at the input size."""
        return resize_to_input(self.pred, self.grid_hw, self.patch_size, self.input_hw)


Prediction = torch.Tensor | UnresizedPrediction


class TaskBranch(nn.Module):
    """``adapter`` + ``head``: ``BackboneOutput -> [B, K, H, W]`` (K classes, 1 for depth; ``dense.tasks``)."""

    def __init__(self, task: str, adapter: ViTSplitAdapter, head: nn.Module) -> None:
        super().__init__()
        self.task = task
        self.adapter = adapter
        self.head = head

    def forward(
        self, features: BackboneOutput, norm: nn.Module | None, patch_size: int, resize: bool = True
    ) -> Prediction:
        """``[B, K, H, W]``, or with ``resize=False`` the head's ``[B, K, 4h, 4w]`` as an ``UnresizedPrediction``."""
        fused = self.adapter(features.hidden_states, features.grid_hw, norm=norm)  # [B, C, h, w]
        pred = UnresizedPrediction(self.head(fused), features.grid_hw, patch_size, features.input_hw)
        return pred.resized() if resize else pred


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

    def forward(self, pixel_values: torch.Tensor, resize: bool = True) -> dict[str, Prediction]:
        """``{name: [B, K, H, W]}``; ``resize=False``: ``{name: UnresizedPrediction}`` (see ``TaskBranch``)."""
        features = self.backbone(pixel_values)  # h[0..L], one frozen pass
        return {
            name: branch(features, self.backbone.norm, self.backbone.patch_size, resize)
            for name, branch in self.branches.items()
        }

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights and buffers of the branches only (the frozen backbone is loaded from its source)."""
        return {f"branches.{k}": v for k, v in self.branches.state_dict().items()}

    def task_head_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the copied blocks (the task heads), which get the lr multiplier."""
        for branch in self.branches.values():
            yield from branch.adapter.task_head.parameters()
