"""Text-only batches still run the vision path (exact zero gradient) so ZeRO-3 and several ranks agree."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llava.modeling_llava import LlavaForConditionalGeneration

from llava_vitsplit.stages import apply_stage


def _text_batch(processor):
    ids = processor.tokenizer(["a short text only reply", "another one"], padding=True, return_tensors="pt")
    return {"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"]}


def _count_tower_calls(model):
    calls = []
    handle = model.model.vision_tower.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


@pytest.mark.parametrize("fixture", ["tiny_checkpoint", "tiny_mlp_checkpoint"])
def test_text_only_loss_gives_the_connector_an_exact_zero_gradient(fixture, request):
    _, model, processor = request.getfixturevalue(fixture)
    apply_stage(model, "finetune")
    batch = _text_batch(processor)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    calls, handle = _count_tower_calls(model)
    try:
        model.zero_grad(set_to_none=True)
        out = model(**batch, labels=labels)
        out.loss.backward()
    finally:
        handle.remove()
    assert calls == [1], "the tower (and so the connector) must run once in a text-only training step"
    connector_grads = [p.grad for p in model.connector.parameters()]
    assert all(g is not None for g in connector_grads), "every connector parameter takes part"
    assert all(torch.count_nonzero(g) == 0 for g in connector_grads)
    assert all(p.grad is None for p in model.model.vision_tower.parameters())
    with torch.no_grad():  # the loss is the plain text loss exactly (LM head on every position)
        reference = LlavaForConditionalGeneration.forward(model, **batch, labels=labels).loss
    torch.testing.assert_close(out.loss.detach(), reference, atol=1e-6, rtol=1e-5)
    model.zero_grad(set_to_none=True)


def test_calls_without_labels_and_generate_do_not_run_the_tower(tiny_checkpoint):
    _, model, processor = tiny_checkpoint
    batch = _text_batch(processor)
    calls, handle = _count_tower_calls(model)
    try:
        with torch.no_grad():
            model(**batch)
            model.generate(**batch, max_new_tokens=2, do_sample=False)
    finally:
        handle.remove()
    assert calls == []
