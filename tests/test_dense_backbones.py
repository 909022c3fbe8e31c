"""Frozen backbones: hidden states, padding, freezing, and task-head equivalence with DINOv2's norm."""

from __future__ import annotations

import json

import pytest
import torch

from llava_vitsplit.adapter import AdapterConfig, ViTSplitAdapter, tokens_to_map
from llava_vitsplit.backbones.configs import backbone_config
from llava_vitsplit.backbones.hf import HFBackbone
from llava_vitsplit.testing.dense_synthetic import TINY_BACKBONE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SMALL = {
    "hidden_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "image_size": 28,
    "patch_size": 14,
}


def _dinov2(**changes) -> HFBackbone:
    torch.manual_seed(0)
    return HFBackbone.from_config({**TINY_BACKBONE, **changes})


def test_dinov2_pads_to_patch_multiple_and_returns_all_hidden_states():
    backbone = _dinov2()
    out = backbone(torch.randn(2, 3, 50, 70))  # patch 8 -> padded 56 x 72
    assert out.grid_hw == (7, 9)
    assert out.input_hw == (50, 70)
    assert len(out.hidden_states) == backbone.num_layers + 1 == 5
    assert all(h.shape == (2, 1 + 63, 32) for h in out.hidden_states)
    assert backbone.num_prefix_tokens == 1 and backbone.patch_size == 8 and backbone.channels == 32
    # DINOv2's own final LayerNorm is the exposed norm
    ref = backbone.model(backbone.pad(torch.zeros(1, 3, 16, 16))[0]).last_hidden_state
    mine = backbone.norm(backbone(torch.zeros(1, 3, 16, 16)).hidden_states[-1])
    torch.testing.assert_close(mine, ref)


def test_backbone_is_frozen_and_stays_in_eval():
    backbone = _dinov2(hidden_dropout_prob=0.5)
    backbone.train()
    assert not backbone.training and not any(m.training for m in backbone.modules())
    assert not any(p.requires_grad for p in backbone.parameters())
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    out = backbone(x)
    assert not out.hidden_states[-1].requires_grad
    a, b = backbone(x).hidden_states[-1], backbone(x).hidden_states[-1]
    torch.testing.assert_close(a, b)  # no dropout


def test_registers_variant_counts_prefix_tokens():
    backbone = HFBackbone.from_config(
        {**SMALL, "model_type": "dinov2_with_registers", "num_register_tokens": 4}
    )
    out = backbone(torch.randn(1, 3, 28, 42))
    assert backbone.num_prefix_tokens == 5
    assert out.hidden_states[0].shape == (1, 5 + 2 * 3, 32)


def test_clip_backbone_interpolates_positions():
    backbone = HFBackbone.from_config(
        {**SMALL, "model_type": "clip_vision_model", "intermediate_size": 64, "image_size": 28}
    )
    out = backbone(torch.randn(1, 3, 40, 56))  # padded 42 x 56 -> 3 x 4 grid, not the 2 x 2 of the config
    assert out.grid_hw == (3, 4) and backbone.norm is None
    assert len(out.hidden_states) == 4 and out.hidden_states[-1].shape == (1, 13, 32)
    config = AdapterConfig(
        num_task_layers=1, prior_selection="explicit", prior_layers=[0, 2], conv_type="plain"
    )
    adapter = ViTSplitAdapter(
        config, backbone.blocks, backbone.num_layers, backbone.channels, backbone.num_prefix_tokens
    )
    assert adapter(out.hidden_states, out.grid_hw).shape == (1, 32, 3, 4)
    task = adapter.task_features(
        out.hidden_states, out.grid_hw
    )  # CLIP blocks need an attention_mask argument
    torch.testing.assert_close(
        task, tokens_to_map(out.hidden_states[-1][:, 1:], out.grid_hw), atol=1e-5, rtol=1e-5
    )


def test_open_clip_tower_matches_its_own_forward_at_native_size():
    from open_clip.transformer import VisionTransformer

    from llava_vitsplit.backbones.open_clip import OpenClipBackbone

    torch.manual_seed(0)
    visual = VisionTransformer(
        image_size=32, patch_size=8, width=32, layers=2, heads=2, mlp_ratio=2.0, output_dim=16
    )
    backbone = OpenClipBackbone(visual)
    x = torch.randn(2, 3, 32, 32)
    out = backbone(x)
    ref = visual.transformer(visual._embeds(x))  # open_clip's own path, fixed 4 x 4 grid
    torch.testing.assert_close(out.hidden_states[-1], ref)
    bigger = backbone(torch.randn(1, 3, 40, 48))  # interpolated positions
    assert bigger.grid_hw == (5, 6) and bigger.hidden_states[-1].shape == (1, 31, 32)


def test_task_head_with_norm_reproduces_frozen_output_at_init():
    backbone = _dinov2()
    config = AdapterConfig(num_task_layers=2, prior_selection="explicit", prior_layers=[1, 3])
    adapter = ViTSplitAdapter(
        config, backbone.blocks, backbone.num_layers, backbone.channels, backbone.num_prefix_tokens
    )
    out = backbone(torch.randn(2, 3, 32, 40))
    task = adapter.task_features(out.hidden_states, out.grid_hw, norm=backbone.norm)  # [B, C, h, w]
    expected = tokens_to_map(backbone.norm(out.hidden_states[-1])[:, 1:], out.grid_hw)
    torch.testing.assert_close(task, expected, atol=1e-5, rtol=1e-5)
    assert all(p.requires_grad for p in adapter.task_head.parameters())


def test_embedded_configs_and_bad_names():
    assert backbone_config("dinov2-small")["hidden_size"] == 384
    assert backbone_config("dinov2-with-registers-large")["num_register_tokens"] == 4
    with pytest.raises(KeyError, match="dinov2-small"):
        backbone_config("dinov3-small")
    with pytest.raises(ValueError, match="unsupported vision model_type"):
        HFBackbone.from_config({"model_type": "vit", "hidden_size": 32})


def test_the_towers_a_vlm_preset_uses_are_stored_once():
    """DINOv2-S and CLIP-L/336: the dense configs are the presets' released configs, not a second copy."""
    from llava_vitsplit.presets import CONFIG_DIR, get_preset

    assert backbone_config("clip-vit-large-patch14-336") == get_preset("llava-v1.5-7b").vision_config
    assert backbone_config("dinov2-small") == get_preset("quickstart").vision_config
    small = backbone_config("dinov2-with-registers-small")
    assert (small["hidden_size"], small["num_hidden_layers"], small["num_attention_heads"]) == (384, 12, 6)
    sources = json.loads((CONFIG_DIR / "sources.json").read_text())  # every stored config names its model
    assert sorted(sources) == sorted(p.name for p in CONFIG_DIR.glob("*.json") if p.name != "sources.json")
