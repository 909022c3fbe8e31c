"""Detection neck and torchvision Mask R-CNN on a frozen ViT with a ViT-Split adapter.

torchvision's Mask R-CNN expects power-of-two strides. The batched image ``[B, 3, H, W]`` (padded by
Mask R-CNN's transform to a multiple of 32) is therefore resized by ``patch / 16`` before the backbone, so
the patch grid is exactly ``(H/16, W/16)``: the fused map is stride 16. The neck then builds
4x (two ConvT), 2x (one ConvT), 1x (identity) and 0.5x (max-pool) maps -> strides 4, 8, 16, 32, each
followed by a BatchNorm, and torchvision's ``FeaturePyramidNetwork`` (+ a max-pooled extra level) makes
the five 256-channel maps Mask R-CNN's default anchor generator and RoI heads expect. Mask R-CNN's
transform normalises the [0, 1] images with the backbone's ``Normalization`` (``image_mean`` /
``image_std``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from llava_vitsplit.adapter import ViTSplitAdapter
from llava_vitsplit.backbones.base import FrozenBackbone
from llava_vitsplit.backbones.registry import Normalization


class DetectionNeck(nn.Module):
    """Fused map ``[B, C, h, w]`` (stride 16) -> FPN maps ``{"0".."3", "pool"}`` at strides 4..64."""

    def __init__(self, channels: int, out_channels: int = 256) -> None:
        super().__init__()
        c = channels
        self.up4 = nn.Sequential(
            nn.ConvTranspose2d(c, c, 2, stride=2),
            nn.BatchNorm2d(c),
            nn.GELU(),
            nn.ConvTranspose2d(c, c, 2, stride=2),
        )
        self.up2 = nn.ConvTranspose2d(c, c, 2, stride=2)
        self.down2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.norms = nn.ModuleList(nn.BatchNorm2d(c) for _ in range(4))
        self.fpn = FeaturePyramidNetwork([c] * 4, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, fused: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        levels = [self.up4(fused), self.up2(fused), fused, self.down2(fused)]  # strides 4, 8, 16, 32
        maps = OrderedDict(
            (str(i), norm(x)) for i, (norm, x) in enumerate(zip(self.norms, levels, strict=True))
        )
        return self.fpn(maps)  # "0".."3" + "pool", each [B, out_channels, *, *]


class ViTSplitDetectionBackbone(nn.Module):
    """Mask R-CNN backbone: frozen ViT -> ViT-Split adapter -> neck. ``out_channels`` as torchvision wants."""

    def __init__(self, backbone: FrozenBackbone, adapter: ViTSplitAdapter, out_channels: int = 256) -> None:
        super().__init__()
        self.backbone = backbone
        self.adapter = adapter
        self.neck = DetectionNeck(adapter.out_channels, out_channels)
        self.out_channels = out_channels

    def train(self, mode: bool = True) -> ViTSplitDetectionBackbone:
        super().train(mode)
        self.backbone.train(False)
        return self

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        height, width = images.shape[-2:]
        if height % 16 or width % 16:
            raise ValueError(
                f"detection input must be a multiple of 16 (Mask R-CNN pads to 32), got {height}x{width}"
            )
        p = self.backbone.patch_size
        if p != 16:
            images = F.interpolate(
                images, size=(height // 16 * p, width // 16 * p), mode="bilinear", align_corners=False
            )
        features = self.backbone(images)  # grid (H/16, W/16)
        fused = self.adapter(
            features.hidden_states, features.grid_hw, norm=self.backbone.norm
        )  # [B, C, H/16, W/16]
        return self.neck(fused)


def build_mask_rcnn(
    backbone: FrozenBackbone,
    adapter: ViTSplitAdapter,
    num_classes: int | None,
    normalization: Normalization,
    min_size: int = 800,
    max_size: int = 1333,
    fpn_channels: int = 256,
    mask_head_channels: int | None = None,
    **kwargs,
) -> MaskRCNN:
    """torchvision ``MaskRCNN`` with our backbone; ``num_classes`` includes background (COCO: 91);
    images are normalised with the backbone's ``normalization``.

    ``kwargs`` go to ``MaskRCNN`` (RPN / RoI sampling sizes ...); ``fpn_channels`` is the FPN width;
    ``mask_head_channels`` narrows the four mask-head convs (torchvision's default is 256).
    """
    if mask_head_channels is not None:
        kwargs["mask_head"] = MaskRCNNHeads(fpn_channels, [mask_head_channels] * 4, dilation=1)
        kwargs["mask_predictor"] = MaskRCNNPredictor(mask_head_channels, mask_head_channels, num_classes)
        kwargs["box_predictor"] = FastRCNNPredictor(1024, num_classes)  # default TwoMLPHead width
        num_classes = None  # torchvision wants it given only through the predictors then
    return MaskRCNN(
        ViTSplitDetectionBackbone(backbone, adapter, fpn_channels),
        num_classes=num_classes,
        min_size=min_size,
        max_size=max_size,
        image_mean=list(normalization.mean),
        image_std=list(normalization.std),
        **kwargs,
    )
