"""The processor: LLaVA's pad-to-square, image-token expansion, the vicuna_v1 chat template."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from llava_vitsplit.model.chat_templates import VICUNA_V1_SYSTEM
from llava_vitsplit.model.processing import LlavaViTSplitProcessor, pad_to_square


def test_pad_to_square_centres_the_image_on_the_fill_colour():
    image = Image.new("RGB", (6, 2), (255, 0, 0))
    padded = pad_to_square(image, (1, 2, 3))
    assert padded.size == (6, 6)
    arr = np.asarray(padded)
    assert (arr[:2] == (1, 2, 3)).all() and (arr[2:4] == (255, 0, 0)).all() and (arr[4:] == (1, 2, 3)).all()
    square = Image.new("RGB", (4, 4))
    assert pad_to_square(square, (0, 0, 0)) is square


def test_pad_mode_fills_with_the_mean_colour_and_resize_mode_does_not(tiny_checkpoint):
    _, _, processor = tiny_checkpoint
    wide = Image.new("RGB", (112, 28), (255, 255, 255))  # 4:1, white
    padded = processor(images=wide, text="<image>", return_tensors="pt")["pixel_values"][0]  # [3, 56, 56]
    # rows above the image are the mean colour, i.e. ~0 after normalisation; the middle rows are white
    assert padded[:, :10].abs().max() < 0.02
    assert padded[:, 27].min() > 1.0
    resized = LlavaViTSplitProcessor(
        image_processor=processor.image_processor,
        tokenizer=processor.tokenizer,
        patch_size=processor.patch_size,
        vision_feature_select_strategy=processor.vision_feature_select_strategy,
        num_additional_image_tokens=processor.num_additional_image_tokens,
        image_aspect_ratio="resize",
    )
    plain = resized(images=wide, text="<image>", return_tensors="pt")["pixel_values"][0]
    assert plain.min() > 1.0  # centre crop of a white image: no padding anywhere


def test_grayscale_and_rgba_images_are_converted(tiny_checkpoint):
    _, _, processor = tiny_checkpoint
    for image in (Image.new("L", (30, 40), 128), Image.new("RGBA", (30, 40), (1, 2, 3, 0))):
        assert processor(images=image, text="<image>", return_tensors="pt")["pixel_values"].shape == (
            1,
            3,
            56,
            56,
        )


def test_each_image_token_expands_to_the_connector_length(tiny_checkpoint, tiny_mlp_checkpoint):
    for _, model, processor in (tiny_checkpoint, tiny_mlp_checkpoint):
        batch = processor(
            images=[Image.new("RGB", (20, 30)), Image.new("RGB", (30, 20))],
            text=["<image> one", "two <image>"],
            padding=True,
            return_tensors="pt",
        )
        counts = (batch["input_ids"] == model.config.image_token_id).sum(1)
        assert counts.tolist() == [16, 16]


def test_vicuna_chat_template_is_set_for_tokenizers_without_one(tiny_checkpoint):
    _, _, processor = tiny_checkpoint
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q1"}]},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text == f"{VICUNA_V1_SYSTEM} USER: <image>\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT:"


def test_unknown_aspect_ratio_mode_is_rejected(tiny_checkpoint):
    _, _, processor = tiny_checkpoint
    with pytest.raises(ValueError, match="image_aspect_ratio"):
        LlavaViTSplitProcessor(
            processor.image_processor, processor.tokenizer, patch_size=14, image_aspect_ratio="crop"
        )


def test_image_token_is_a_single_special_token(tiny_checkpoint):
    _, model, processor = tiny_checkpoint
    ids = processor.tokenizer("a <image> b", add_special_tokens=False)["input_ids"]
    assert ids.count(model.config.image_token_id) == 1
    assert torch.tensor(ids).ne(processor.tokenizer.unk_token_id).all()


def test_tokenizer_owned_text_template_gets_flattened_image_parts(tiny_checkpoint):
    import copy

    _, _, processor = tiny_checkpoint
    tokenizer = copy.deepcopy(processor.tokenizer)
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    chatml = LlavaViTSplitProcessor(processor.image_processor, tokenizer, patch_size=14)
    assert chatml.chat_template is None  # the tokenizer's own template is kept
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]}]
    assert (
        chatml.apply_chat_template(messages, add_generation_prompt=True)
        == "<|user|><image>\nQ\n<|assistant|>"
    )
