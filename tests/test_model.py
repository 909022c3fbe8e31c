"""The LLaVA-ViT-Split model on tiny random parts: init, freezing, stages, dtype, save/load, generate."""

from __future__ import annotations

import tempfile

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

import llava_vitsplit  # noqa: F401  (registers the Auto classes)
from llava_vitsplit.adapter import tokens_to_map
from llava_vitsplit.backbones.hf_layers import encoder_layers, num_prefix_tokens
from llava_vitsplit.model import LlavaViTSplitForConditionalGeneration, LlavaViTSplitModel
from llava_vitsplit.stages import apply_stage
from llava_vitsplit.testing.tiny import build_tiny_checkpoint


def _inputs(processor, text="What is this?", size=(70, 50), color=(200, 30, 30)):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(images=Image.new("RGB", size, color), text=prompt, return_tensors="pt")


def test_auto_classes_resolve_to_our_model(tiny_checkpoint):
    path, _, _ = tiny_checkpoint
    assert AutoConfig.from_pretrained(path).model_type == "llava_vitsplit"
    assert isinstance(
        AutoModelForImageTextToText.from_pretrained(path), LlavaViTSplitForConditionalGeneration
    )
    assert isinstance(AutoModel.from_pretrained(path), LlavaViTSplitModel)
    assert type(AutoProcessor.from_pretrained(path)).__name__ == "LlavaViTSplitProcessor"


def test_tower_is_truncated_to_the_feature_layer(tiny_checkpoint):
    _, model, _ = tiny_checkpoint
    # 4 blocks with feature layer -2: blocks 0..2 run, the last one is dropped
    assert len(encoder_layers(model.model.vision_tower)) == 3
    assert model.model.vision_depth == 3


@pytest.mark.parametrize("kind", ["clip", "siglip", "dinov2"])
def test_task_head_reproduces_the_frozen_feature_layer_at_init(kind):
    with tempfile.TemporaryDirectory() as tmp:
        _, model, processor = build_tiny_checkpoint(tmp, kind=kind)
    inputs = _inputs(processor)
    inner = model.model
    states, grid = inner.vision_hidden_states(inputs["pixel_values"])
    adapter = inner.multi_modal_projector.adapter
    prefix = num_prefix_tokens(model.config.vision_config)
    expected = tokens_to_map(states[-1][:, prefix:], grid)  # the tower's own h[E] = LLaVA's feature layer
    torch.testing.assert_close(adapter.task_features(states, grid), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["clip", "siglip", "dinov2"])
def test_image_features_have_one_token_per_patch(kind):
    with tempfile.TemporaryDirectory() as tmp:
        _, model, processor = build_tiny_checkpoint(tmp, kind=kind, fusion_output="llm")
    inputs = _inputs(processor)
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image_tokens == 16  # 56 px / patch 14 -> 4x4
    feats = model.model.get_image_features(inputs["pixel_values"]).pooler_output
    assert len(feats) == 1 and feats[0].shape == (16, model.config.text_config.hidden_size)
    assert model(**inputs).logits.shape[:2] == inputs["input_ids"].shape


def test_no_gradient_reaches_the_frozen_tower(tiny_checkpoint):
    _, model, processor = tiny_checkpoint
    apply_stage(model, "finetune")
    inputs = _inputs(processor)
    model.zero_grad(set_to_none=True)
    out = model(**inputs, labels=inputs["input_ids"])
    out.loss.backward()
    assert all(p.grad is None for p in model.model.vision_tower.parameters())
    assert any(p.grad is not None for p in model.connector.adapter.task_head.parameters())
    assert all(p.grad is not None for p in model.connector.adapter.fusion.parameters())
    states, _ = model.model.vision_hidden_states(inputs["pixel_values"])
    assert all(s.grad_fn is None and not s.requires_grad for s in states)
    model.zero_grad(set_to_none=True)


def test_stage_policy_trains_exactly_the_right_parameters(tiny_checkpoint):
    _, model, _ = tiny_checkpoint
    apply_stage(model, "pretrain")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    connector = {n for n, _ in model.named_parameters() if n.startswith("model.multi_modal_projector.")}
    assert trainable == connector
    assert any(".task_head." in n for n in trainable) and any(".prior_head." in n for n in trainable)
    apply_stage(model, "finetune")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    tower = {n for n, _ in model.named_parameters() if n.startswith("model.vision_tower.")}
    assert tower and not (trainable & tower)
    assert trainable == {n for n, _ in model.named_parameters()} - tower
    with pytest.raises(ValueError, match="unknown stage"):
        apply_stage(model, "stage3")


def test_image_token_mismatch_raises_a_clear_error(tiny_checkpoint):
    _, model, processor = tiny_checkpoint
    inputs = _inputs(processor)
    ids = inputs["input_ids"].clone()
    ids[ids == model.config.image_token_id] = processor.tokenizer.pad_token_id
    ids[0, -3:] = model.config.image_token_id  # 3 image tokens for 16 features
    with pytest.raises(ValueError, match="Image features and image tokens do not match"):
        model(input_ids=ids, pixel_values=inputs["pixel_values"], attention_mask=inputs["attention_mask"])


def test_bfloat16_forward_and_backward():
    with tempfile.TemporaryDirectory() as tmp:
        _, model, processor = build_tiny_checkpoint(tmp)
    model.to(torch.bfloat16)
    apply_stage(model, "finetune")
    inputs = _inputs(processor)
    out = model(**inputs, labels=inputs["input_ids"])
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    out.loss.backward()
    grad = model.connector.adapter.prior_head.spatial.weight.grad
    assert grad is not None and grad.dtype == torch.bfloat16 and torch.isfinite(grad.float()).all()


@pytest.mark.parametrize("num_items_in_batch", [None, 7])
def test_loss_on_supervised_positions_equals_the_full_logits_loss(num_items_in_batch):
    from transformers.models.llava.modeling_llava import LlavaForConditionalGeneration

    with tempfile.TemporaryDirectory() as tmp:
        _, model, processor = build_tiny_checkpoint(tmp)
    apply_stage(model, "finetune")
    inputs = _inputs(processor)
    labels = inputs["input_ids"].clone()
    labels[:, : labels.shape[1] - 5] = -100  # the last 5 tokens are targets
    kwargs = {} if num_items_in_batch is None else {"num_items_in_batch": torch.tensor(num_items_in_batch)}

    def loss_and_grad(forward):
        model.zero_grad(set_to_none=True)
        out = forward(model, **inputs, labels=labels, **kwargs)
        out.loss.backward()
        return out, model.connector.adapter.fusion.reduce.weight.grad.clone()

    ours, our_grad = loss_and_grad(LlavaViTSplitForConditionalGeneration.forward)
    full, full_grad = loss_and_grad(LlavaForConditionalGeneration.forward)  # LM head on every position
    assert ours.logits.shape == (5, model.config.text_config.vocab_size)
    assert full.logits.shape[:2] == inputs["input_ids"].shape
    torch.testing.assert_close(ours.loss, full.loss, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(our_grad, full_grad, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("fixture", ["tiny_checkpoint", "tiny_mlp_checkpoint"])
def test_save_and_load_give_identical_logits_and_generate_runs(fixture, request):
    path, model, processor = request.getfixturevalue(fixture)
    model.eval()
    loaded = AutoModelForImageTextToText.from_pretrained(path).eval()
    loaded_processor = AutoProcessor.from_pretrained(path)
    inputs = _inputs(loaded_processor)
    assert torch.equal(inputs["input_ids"], _inputs(processor)["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, loaded(**inputs).logits, atol=0, rtol=0)
    out = loaded.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 4)


def test_mlp_baseline_uses_transformers_llava_projector(tiny_mlp_checkpoint):
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    _, model, processor = tiny_mlp_checkpoint
    assert isinstance(model.connector, LlavaMultiModalProjector)
    inputs = _inputs(processor)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 16
    assert model(**inputs).logits.shape[1] == inputs["input_ids"].shape[1]


def test_connector_init_is_seeded(tmp_path):
    _, a, _ = build_tiny_checkpoint(tmp_path / "a", seed=3)
    _, b, _ = build_tiny_checkpoint(tmp_path / "b", seed=3)
    _, c, _ = build_tiny_checkpoint(tmp_path / "c", seed=4)
    sa, sb, sc = (m.connector.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_config_rejects_bad_settings():
    from llava_vitsplit.model import LlavaViTSplitConfig

    with pytest.raises(ValueError, match="unknown adapter setting"):
        LlavaViTSplitConfig(adapter={"num_task_layer": 2})
    with pytest.raises(ValueError, match="single int vision_feature_layer"):
        LlavaViTSplitConfig(vision_feature_layer=[-2, -5])
    with pytest.raises(Exception, match="connector_type"):
        LlavaViTSplitConfig(connector_type="qformer")
