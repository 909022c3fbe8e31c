"""LoRA stage 2 then ``llava-vitsplit merge-lora`` for each modern LLM family (Llama-3, Qwen2.5, Qwen3,
Gemma-3 text), in-process on tiny models: LoRA sits on the family's registered target modules, the merged
checkpoint loads as a plain model with the family's processor and end-of-turn EOS, and it computes the
LoRA model's logits and greedy reply to the family's prompt.
"""

from __future__ import annotations

import json

import pytest
import torch
from _script_runs import SHIPPED_DATA
from PIL import Image

from llava_vitsplit.llms import llm_family
from llava_vitsplit.testing.llm_families import save_tiny_family_lm
from llava_vitsplit.testing.tiny import save_tiny_vision_tower
from llava_vitsplit.testing.tiny_parts import tiny_adapter_args

FAMILIES = ("gemma3", "llama3", "qwen2_5", "qwen3")


def lora_argv(vision, llm, out) -> list[str]:
    return [
        "--model_name_or_path", str(llm), "--vision_tower", str(vision),
        "--data_path", str(SHIPPED_DATA / "finetune.json"), "--image_folder", str(SHIPPED_DATA),
        "--output_dir", str(out), "--report_to", "none", "--per_device_train_batch_size", "4",
        "--dataloader_num_workers", "0", "--use_cpu", "True", "--max_steps", "2", "--save_strategy", "no",
        "--learning_rate", "5e-2", "--lora_enable", "True", "--lora_r", "4", "--lora_alpha", "8",
        *tiny_adapter_args(),
    ]  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_run_merges_into_the_familys_plain_checkpoint(family, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from llava_vitsplit.cli import main as cli
    from llava_vitsplit.train.model_setup import BuildRecipe, build_from_recipe
    from llava_vitsplit.train.run import train

    spec = llm_family(family)
    vision = save_tiny_vision_tower(tmp_path / "vision")
    llm = save_tiny_family_lm(tmp_path / "llm", family)
    lora, merged_dir = tmp_path / "lora", tmp_path / "merged"
    train(lora_argv(vision, llm, lora))
    assert json.loads((lora / "adapter_config.json").read_text())["r"] == 4
    assert cli(["merge-lora", str(lora), str(merged_dir)]) == 0

    merged = AutoModelForImageTextToText.from_pretrained(merged_dir).eval()
    assert not any("lora" in key for key in merged.state_dict())
    processor = AutoProcessor.from_pretrained(merged_dir)
    assert processor.llm_family == family and processor.chat_template == spec.chat_template
    end_of_turn = processor.tokenizer.convert_tokens_to_ids(spec.end_of_turn)
    assert merged.generation_config.eos_token_id[0] == end_of_turn

    base, _ = build_from_recipe(BuildRecipe.load(lora))
    untrained = {k: v.clone() for k, v in base.state_dict().items()}
    peft_model = PeftModel.from_pretrained(base, str(lora)).eval()
    adapted = {
        key.split(".lora_A.")[0].rsplit(".", 1)[-1] for key in peft_model.state_dict() if ".lora_A." in key
    }
    assert adapted == set(spec.lora_target_modules)  # the family's registered targets, all of them
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    image = Image.open(sorted((SHIPPED_DATA / "images").glob("*.png"))[5])
    inputs = processor(images=[image], text=[prompt], return_tensors="pt")
    greedy = {"max_new_tokens": 6, "do_sample": False}
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).logits, peft_model(**inputs).logits, rtol=1e-4, atol=1e-4)
        assert torch.equal(merged.generate(**inputs, **greedy), peft_model.generate(**inputs, **greedy))
    after = merged.state_dict()
    layers = [k for k in untrained if k.startswith("model.language_model.layers.") and k in after]
    assert any(not torch.equal(untrained[k], after[k]) for k in layers)  # the trained LoRA deltas merged in
