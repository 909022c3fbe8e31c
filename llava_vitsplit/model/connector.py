"""The connector between the frozen vision tower and the LLM (``model.multi_modal_projector``).

``ViTSplitConnector``: the ViT-Split adapter (task head, prior head, fusion net) over the tower's hidden
states ``h[0..E]``, flattened to the LLM token sequence ``[B, h*w, D_llm]``, optionally through a 2-layer
GELU MLP when the fusion net keeps the vision width (``fusion_output="vision_mlp"``).

The LLaVA-1.5 ``mlp2x_gelu`` baseline is transformers' own ``LlavaMultiModalProjector``; both connectors
are built as ``(config, tower_blocks, num_layers)`` and expose ``forward_hidden_states(hidden_states,
grid_hw)`` so the model treats them alike. Each is one entry of the connector registry
(``connector_registry.py``), which builds them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from llava_vitsplit.adapter import ViTSplitAdapter
from llava_vitsplit.backbones.hf_layers import num_prefix_tokens


class ViTSplitConnector(nn.Module):
    """ViT-Split heads + (optional) MLP: hidden states ``h[0..E]`` -> ``[B, h*w, D_llm]``."""

    def __init__(self, config, tower_blocks: Sequence[nn.Module], num_layers: int) -> None:
        super().__init__()
        vision_width = config.vision_config.hidden_size
        llm_width = config.text_config.hidden_size
        adapter_config = config.adapter_config
        if config.fusion_output == "llm":
            adapter_config.fusion_channels = llm_width
        elif adapter_config.fusion_channels is None:
            adapter_config.fusion_channels = vision_width
        self.adapter = ViTSplitAdapter(
            adapter_config,
            tower_blocks,
            num_layers=num_layers,
            channels=vision_width,
            num_prefix_tokens=num_prefix_tokens(config.vision_config),
        )
        if config.fusion_output == "vision_mlp":
            self.mlp: nn.Module | None = nn.Sequential(
                nn.Linear(adapter_config.fusion_channels, llm_width),
                nn.GELU(),
                nn.Linear(llm_width, llm_width),
            )
        else:
            self.mlp = None

    def forward_hidden_states(
        self, hidden_states: Sequence[torch.Tensor], grid_hw: tuple[int, int]
    ) -> torch.Tensor:
        fused = self.adapter(hidden_states, grid_hw)  # [B, C_out, h, w]
        # contiguous: a transposed view is refused by serving engines' fused linear kernels (vLLM)
        tokens = fused.flatten(2).transpose(1, 2).contiguous()  # [B, h*w, C_out]
        return self.mlp(tokens) if self.mlp is not None else tokens  # [B, h*w, D_llm]


class MLPConnector(LlavaMultiModalProjector):
    """LLaVA-1.5 ``mlp2x_gelu`` on the feature layer ``h[E]`` (CLS dropped): ``[B, h*w, C] -> [B, h*w, D]``."""

    def __init__(self, config, tower_blocks: Sequence[nn.Module] = (), num_layers: int = 0) -> None:
        super().__init__(config)
        self.num_prefix_tokens = num_prefix_tokens(config.vision_config)
        self.keep_prefix = config.vision_feature_select_strategy == "full"

    def forward_hidden_states(
        self, hidden_states: Sequence[torch.Tensor], grid_hw: tuple[int, int]
    ) -> torch.Tensor:
        features = hidden_states[-1]  # [B, P + h*w, C]
        if not self.keep_prefix:
            features = features[:, self.num_prefix_tokens :]  # [B, h*w, C]
        return self(features)  # [B, N, D_llm]
