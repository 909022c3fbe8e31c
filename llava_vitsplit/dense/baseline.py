"""The paper's efficiency baseline: full fine-tuning of DINOv2 with a linear segmentation head.

Every backbone parameter trains; the head is ``BatchNorm + Conv1x1`` on the final-LayerNorm patch tokens,
upsampled bilinearly to the input. Used by ``bench/dense_train_step.py`` against ViT-Split.
"""

from __future__ import annotations

import torch
from torch import nn

from llava_vitsplit.adapter import tokens_to_map
from llava_vitsplit.backbones.base import FrozenBackbone
from llava_vitsplit.dense.heads import batch_norm_conv1x1
from llava_vitsplit.dense.model import Prediction, UnresizedPrediction


class LinearSegmenter(nn.Module):
    """Trainable tower + linear head: ``[B, 3, H, W] -> [B, K, H, W]``.

    Takes a ``FrozenBackbone`` only to reuse its padding and tower, and makes every parameter trainable.
    """

    def __init__(self, backbone: FrozenBackbone, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        for p in self.backbone.parameters():
            p.requires_grad_(True)
        self.norm = nn.BatchNorm2d(backbone.channels)
        self.classifier = nn.Conv2d(backbone.channels, num_classes, kernel_size=1)

    def forward(self, pixel_values: torch.Tensor, resize: bool = True) -> Prediction:
        """``[B, K, H, W]`` logits, or with ``resize=False`` the ``[B, K, h, w]`` map as an ``UnresizedPrediction``."""
        height, width = pixel_values.shape[-2:]
        padded, grid_hw = self.backbone.pad(pixel_values)
        hidden = self.backbone._hidden_states(padded)[-1]  # [B, P + h*w, C], with gradients
        if self.backbone.norm is not None:
            hidden = self.backbone.norm(hidden)
        features = tokens_to_map(hidden[:, self.backbone.num_prefix_tokens :], grid_hw)  # [B, C, h, w]
        logits = batch_norm_conv1x1(features, self.norm, self.classifier)  # [B, K, h, w]
        pred = UnresizedPrediction(logits, grid_hw, self.backbone.patch_size, (height, width))
        return pred.resized() if resize else pred  # [B, K, H, W]
