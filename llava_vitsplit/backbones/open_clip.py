"""open_clip vision towers (``open_clip.transformer.VisionTransformer``) behind ``FrozenBackbone``.

open_clip's own forward uses a fixed positional embedding, so the embeddings are computed here with the
positional grid interpolated (bicubic) to the padded input's patch grid; ``h[0]`` is the output of
``ln_pre``, ``h[i + 1]`` the output of ``transformer.resblocks[i]`` (batch-first). ``norm`` is ``None``:
``ln_post`` is trained for the pooled token only.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from llava_vitsplit.backbones.base import FrozenBackbone


class OpenClipBackbone(FrozenBackbone):
    """Wraps an open_clip ``VisionTransformer`` (``model.visual`` of a CLIP model)."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        for name in ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer"):
            if not hasattr(visual, name):
                raise TypeError(
                    f"{type(visual).__name__} is not an open_clip VisionTransformer (no {name!r})"
                )
        if not getattr(visual.transformer, "batch_first", True):
            raise TypeError("open_clip transformer must be batch_first (open_clip >= 2.23)")
        self.visual = visual
        self.num_layers = len(visual.transformer.resblocks)
        self.channels = int(visual.conv1.out_channels)
        patch = visual.conv1.kernel_size
        if patch[0] != patch[1]:
            raise ValueError(f"non-square patches {patch} are not supported")
        self.patch_size = int(patch[0])
        self.num_prefix_tokens = 1
        self.norm = None
        self.freeze()

    @property
    def blocks(self) -> nn.ModuleList:
        return self.visual.transformer.resblocks

    @classmethod
    def create(cls, model_name: str, pretrained: str | None = None) -> OpenClipBackbone:
        """``open_clip.create_model(model_name, pretrained=...)`` (a local weights file) -> its vision tower."""
        import open_clip

        model = open_clip.create_model(model_name, pretrained=pretrained)
        return cls(model.visual)

    def _position_embedding(self, grid_hw: tuple[int, int]) -> torch.Tensor:
        pos = self.visual.positional_embedding  # [1 + g*g, C]
        cls_pos, patch_pos = pos[:1], pos[1:]
        side = int(math.isqrt(patch_pos.shape[0]))
        if side * side != patch_pos.shape[0]:
            raise ValueError(f"positional embedding of {patch_pos.shape[0]} patches is not a square grid")
        if (side, side) != tuple(grid_hw):
            grid = patch_pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)  # [1, C, g, g]
            grid = F.interpolate(grid.float(), size=grid_hw, mode="bicubic", align_corners=False)
            patch_pos = grid.to(pos.dtype).permute(0, 2, 3, 1).reshape(grid_hw[0] * grid_hw[1], -1)
        return torch.cat([cls_pos, patch_pos], dim=0)  # [1 + h*w, C]

    def _hidden_states(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        v = self.visual
        x = v.conv1(pixel_values)  # [B, C, h, w]
        grid_hw = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)  # [B, h*w, C]
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # [B, 1, C]
        x = torch.cat([cls, x], dim=1) + self._position_embedding(grid_hw).to(x.dtype)  # [B, 1 + h*w, C]
        x = v.ln_pre(x)
        hidden = [x]
        for block in v.transformer.resblocks:
            x = block(x)  # [B, 1 + h*w, C]
            hidden.append(x)
        return tuple(hidden)
