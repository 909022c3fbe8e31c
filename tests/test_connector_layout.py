"""The ViT-Split connector hands on contiguous token tensors (vLLM's linear layers refuse strided views)."""

from __future__ import annotations

import pytest
import torch

from llava_vitsplit.testing.tiny import build_tiny_checkpoint


@pytest.mark.parametrize("fusion_output", ["llm", "vision_mlp"])
def test_connector_tokens_are_contiguous(tmp_path, fusion_output):
    _, model, _ = build_tiny_checkpoint(tmp_path, fusion_output=fusion_output)
    connector = model.connector
    seen = []
    if connector.mlp is not None:  # the MLP's input is what a replaced linear layer would receive
        connector.mlp[0].register_forward_hook(lambda module, args, out: seen.append(args[0]))
    pixel_values = torch.randn(2, 3, 56, 56)  # [B, 3, H, W]
    with torch.no_grad():
        features = model.model.get_image_features(pixel_values).pooler_output  # B x [h*w, D_llm]
    assert all(f.is_contiguous() for f in features + seen)
    assert len(seen) == (1 if fusion_output == "vision_mlp" else 0)
