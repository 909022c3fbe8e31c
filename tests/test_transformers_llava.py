"""The ``mlp2x_gelu`` baseline is the same function as transformers' ``LlavaForConditionalGeneration``."""

import pytest
import torch
from PIL import Image
from transformers import LlavaForConditionalGeneration

from llava_vitsplit.model.transformers_llava import to_transformers_llava
from llava_vitsplit.stages import apply_stage


def _batch(processor):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    images = [Image.new("RGB", (60, 40), (200, 30, 30)), Image.new("RGB", (40, 60), (20, 90, 200))]
    return processor(images=images, text=[prompt, prompt + " a shape"], padding=True, return_tensors="pt")


@pytest.fixture(scope="module")
def tiny_dinov2_mlp_checkpoint(tmp_path_factory):
    """The quickstart's tower family (DINOv2) with the ``mlp2x_gelu`` connector."""
    from llava_vitsplit.testing.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(
        tmp_path_factory.mktemp("dinov2"), kind="dinov2", connector_type="mlp2x_gelu"
    )


@pytest.mark.parametrize(
    "fixture, stage",
    [
        ("tiny_mlp_checkpoint", "pretrain"),
        ("tiny_mlp_checkpoint", "finetune"),
        ("tiny_dinov2_mlp_checkpoint", "finetune"),
    ],
)
def test_logits_loss_and_gradients_equal_transformers_llava(fixture, stage, request):
    _, model, processor = request.getfixturevalue(fixture)
    model = model.float().eval()
    apply_stage(model, stage)
    llava = to_transformers_llava(model)
    assert type(llava) is LlavaForConditionalGeneration
    assert sum(p.numel() for p in llava.parameters()) == sum(p.numel() for p in model.parameters())
    batch = _batch(processor)
    with torch.no_grad():
        ours, theirs = model(**batch).logits, llava(**batch).logits  # [B, L, V] each
    assert ours.shape[:2] == batch["input_ids"].shape
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)

    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    labels[:, :-4] = -100
    grads, losses = [], []
    for m in (model, llava):
        m.zero_grad(set_to_none=True)
        losses.append(m(**batch, labels=labels).loss)
        losses[-1].backward()
        grads.append({n: p.grad for n, p in m.named_parameters() if p.requires_grad})
    torch.testing.assert_close(losses[0], losses[1], atol=1e-6, rtol=1e-5)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4, msg=name)


def test_a_trained_copy_leaves_the_original_unchanged(tiny_mlp_checkpoint):
    _, model, _ = tiny_mlp_checkpoint
    llava = to_transformers_llava(model)
    weight = model.connector.linear_1.weight
    with torch.no_grad():
        llava.model.multi_modal_projector.linear_1.weight.add_(1.0)
    assert not torch.equal(weight, llava.model.multi_modal_projector.linear_1.weight)


def test_the_vitsplit_connector_is_refused(tiny_checkpoint):
    _, model, _ = tiny_checkpoint
    with pytest.raises(ValueError, match="only the mlp2x_gelu connector"):
        to_transformers_llava(model)
