"""A checkpoint's config and processor name the same feature strategy; checkpoints saved before they did
(a ViT-Split config saying ``default`` next to a processor saying ``full``) load and answer the same."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_saved_config_and_processor_agree(tiny_checkpoint, tiny_mlp_checkpoint):
    for path, _, _ in (tiny_checkpoint, tiny_mlp_checkpoint):
        config = json.loads((path / "config.json").read_text())
        processor = json.loads((path / "processor_config.json").read_text())
        assert config["vision_feature_select_strategy"] == "default"
        assert processor["vision_feature_select_strategy"] == config["vision_feature_select_strategy"]


def write_old_processor(path) -> None:
    """The ViT-Split processor as saved before: ``full`` with no additional tokens (``h*w`` either way)."""
    file = path / "processor_config.json"
    data = json.loads(file.read_text())
    data.update(vision_feature_select_strategy="full", num_additional_image_tokens=0)
    file.write_text(json.dumps(data, indent=2))


def answer(path, image: Image.Image):
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=[image], text=[prompt], return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    return inputs["input_ids"], output


def test_a_checkpoint_with_the_old_processor_loads_and_answers_the_same(tiny_checkpoint, tmp_path):
    import shutil

    path = tiny_checkpoint[0]
    old = tmp_path / "old"
    shutil.copytree(path, old)
    write_old_processor(old)
    assert AutoProcessor.from_pretrained(old).vision_feature_select_strategy == "full"
    image = Image.new("RGB", (40, 60), (200, 30, 30))
    new_ids, new_output = answer(path, image)
    old_ids, old_output = answer(old, image)
    assert torch.equal(new_ids, old_ids) and torch.equal(new_output, old_output)
