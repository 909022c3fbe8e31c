"""The backbone registry: one spec per tower family, read by the VLM, the dense models and the fixtures.

A family registered in one place (``register_backbone``) builds and runs as a tiny VLM (saved tiny
parts through ``build_model``) and as a tiny dense model (``build_dense_model``); SigLIP runs in the dense code.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

from llava_vitsplit.adapter import tokens_to_map
from llava_vitsplit.backbones.hf_layers import encoder_layers, num_prefix_tokens
from llava_vitsplit.backbones.registry import (
    BACKBONES,
    HALF,
    BackboneSpec,
    backbone_spec,
    one_cls_token,
    register_backbone,
    unregister_backbone,
)
from llava_vitsplit.dense.build import build_backbone, build_dense_model
from llava_vitsplit.testing.dense_synthetic import tiny_preset
from llava_vitsplit.testing.tiny import build_tiny_checkpoint, tiny_vision_config

# transformers' plain ViT: blocks at ``layers`` (no ``encoder``), a CLS token, a final LayerNorm over all
# tokens, fixed positions unless ``interpolate_pos_encoding`` is passed.
VIT = BackboneSpec(
    model_type="vit",
    model_class="ViTModel",
    block_path="layers",
    block_class="ViTLayer",
    prefix_tokens=one_cls_token,
    final_norm="layernorm",
    interpolate_pos_encoding=True,
    image_processor="ViTImageProcessor",
    normalization=HALF,
)

TINY_DENSE_SHAPE = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _vlm_inputs(processor):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(images=Image.new("RGB", (70, 50), (200, 30, 30)), text=prompt, return_tensors="pt")


def _check_vlm(tmp_path) -> None:
    path, model, processor = build_tiny_checkpoint(tmp_path / "vlm", kind="vit", fusion_output="llm")
    tower = model.model.vision_tower
    assert type(tower).__name__ == "ViTModel" and len(encoder_layers(tower)) == 3  # 4 blocks, layer -2
    assert {"ViTLayer", "LlamaDecoderLayer"} <= set(model._no_split_modules)
    inputs = _vlm_inputs(processor)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 16  # 56 px / 14 -> 4 x 4
    states, grid = model.model.vision_hidden_states(inputs["pixel_values"])
    expected = tokens_to_map(states[-1][:, 1:], grid)  # h[E] without the CLS token
    task = model.connector.adapter.task_features(states, grid)
    torch.testing.assert_close(task, expected, atol=1e-5, rtol=1e-5)
    model.eval()
    with torch.no_grad():
        logits = model(**inputs).logits
        reloaded = AutoModelForImageTextToText.from_pretrained(path).eval()
        torch.testing.assert_close(reloaded(**inputs).logits, logits)
    assert logits.shape[:2] == inputs["input_ids"].shape


def _check_dense() -> None:
    preset = tiny_preset("segmentation", num_classes=4, backbone={**TINY_DENSE_SHAPE, "model_type": "vit"})
    torch.manual_seed(0)
    backbone = build_backbone(preset.backbone)
    assert backbone.num_prefix_tokens == 1 and backbone.norm is backbone.model.layernorm
    out = build_dense_model([preset], backbone)(torch.randn(2, 3, 45, 61))  # padded 48 x 64: 6 x 8 grid
    assert out[preset.name].shape == (2, 4, 45, 61)


def test_a_backbone_registered_in_one_place_builds_the_vlm_and_a_dense_model(tmp_path):
    register_backbone(VIT)
    try:
        assert backbone_spec("vit") is VIT
        _check_vlm(tmp_path)
        _check_dense()
    finally:
        unregister_backbone("vit")
    assert "vit" not in BACKBONES
    with pytest.raises(ValueError, match="unsupported vision model_type 'vit'; supported: clip, "):
        backbone_spec("vit")


def test_dense_model_on_a_tiny_siglip_trains_only_adapter_and_head():
    preset = tiny_preset("segmentation", num_classes=5, backbone={**TINY_DENSE_SHAPE, "model_type": "siglip"})
    torch.manual_seed(0)
    backbone = build_backbone(preset.backbone)
    assert backbone.num_prefix_tokens == 0 and backbone.norm is backbone.model.post_layernorm
    features = backbone(torch.randn(2, 3, 45, 61))  # padded 48 x 64: a 6 x 8 patch grid, no CLS
    assert features.grid_hw == (6, 8)
    assert [tuple(h.shape) for h in features.hidden_states] == [(2, 48, 32)] * 5
    # SigLIP's own forward applies post_layernorm to every token: the exposed norm is exactly that.
    pixels = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(
        backbone.norm(backbone(pixels).hidden_states[-1]),
        backbone.model(pixel_values=pixels).last_hidden_state,
    )

    model = build_dense_model([preset], backbone).train()
    branch = model.branches[preset.name]
    task = branch.adapter.task_features(features.hidden_states, features.grid_hw, norm=backbone.norm)
    expected = tokens_to_map(backbone.norm(features.hidden_states[-1]), features.grid_hw)
    torch.testing.assert_close(task, expected, atol=1e-5, rtol=1e-5)  # task head = frozen tower at init

    out = model(torch.randn(2, 3, 45, 61))[preset.name]
    assert out.shape == (2, 5, 45, 61)
    out.mean().backward()
    assert not model.backbone.training
    assert all(not p.requires_grad and p.grad is None for p in model.backbone.parameters())
    trainable = dict(branch.named_parameters())
    assert all(p.requires_grad for p in trainable.values())
    assert all(p.grad is not None for name, p in trainable.items() if name.startswith("head."))
    assert any(p.grad is not None for p in branch.adapter.task_head.parameters())
    assert any(p.grad is not None for p in branch.adapter.prior_head.parameters())


def test_embedded_siglip_config_builds_on_the_meta_device():
    with torch.device("meta"):
        backbone = build_backbone("siglip-base-patch16-224")
    assert (backbone.channels, backbone.num_layers, backbone.patch_size) == (768, 12, 16)
    assert backbone.num_prefix_tokens == 0 and len(backbone.blocks) == 12


def test_aliases_unknown_types_and_duplicates():
    assert backbone_spec("clip") is backbone_spec("clip_vision_model")
    assert backbone_spec("siglip") is backbone_spec("siglip_vision_model")
    registers = tiny_vision_config("dinov2_with_registers")
    assert num_prefix_tokens(registers) == 1 + registers.num_register_tokens
    assert num_prefix_tokens(tiny_vision_config("siglip")) == 0
    with pytest.raises(ValueError, match="supported: clip, clip_vision_model, dinov2, dinov2_with_registers"):
        backbone_spec("vit")
    with pytest.raises(ValueError, match="'clip' is already registered"):
        register_backbone(replace(VIT, aliases=("clip",)))
    assert "vit" not in BACKBONES  # a refused registration adds nothing
