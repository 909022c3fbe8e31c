"""The LLM family registry: a family registered in one place builds, trains both stages and serves.

A Phi-3-style family (model type ``phi3``: fused ``qkv_proj`` / ``gate_up_proj``, ``<|user|>`` /
``<|assistant|>`` / ``<|end|>`` turns) is one ``register_llm_family`` call; its tiny model and tokenizer
come from the spec (``testing/llm_families.py``). Both stages train in-process on the shipped multi-turn
records with no template flag; the saved processor renders the family's template, generation stops at
``<|end|>`` and the training labels are exactly the replies with their end-of-turn token. Unknown model
types and tokenizers are one error naming the supported families, before any weights load.
"""

from __future__ import annotations

import json

import pytest
from _script_runs import SHIPPED_DATA

from llava_vitsplit.data.dataset import LazySupervisedDataset
from llava_vitsplit.data.encoding import IGNORE_INDEX
from llava_vitsplit.llms import LLMFamilyError, LLMFamilySpec, family_for, register_llm_family
from llava_vitsplit.llms.registry import unregister_llm_family
from llava_vitsplit.testing.llm_families import make_family_tokenizer, save_tiny_family_lm
from llava_vitsplit.testing.tiny import save_tiny_vision_tower
from llava_vitsplit.testing.tiny_parts import tiny_adapter_args

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("one_torch_thread")]

PHI3_LIKE_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def phi3_like(messages, ctx):
    out = []
    for message in messages:
        head = f"<|{message['role']}|>\n"
        if message["role"] == "assistant":
            out += [(head, False), (message["content"] + "<|end|>", True), ("\n", False)]
        else:
            out.append((head + message["content"] + "<|end|>\n", False))
    return out


PHI3_LIKE = LLMFamilySpec(
    name="phi3_like",
    model_types=("phi3",),
    marker_tokens=("<|user|>", "<|assistant|>", "<|end|>"),
    renderer=phi3_like,
    chat_template=PHI3_LIKE_TEMPLATE,
    template_source="written for this test",
    end_of_turn="<|end|>",
    stop_tokens=("<|endoftext|>",),
    pad_tokens=("<|endoftext|>",),
    special_tokens={"bos_token": "<s>", "eos_token": "<|end|>", "pad_token": "<|endoftext|>"},
    tiny_config=dict,
    lora_target_modules=("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    tokenizer_adds_bos=True,
)


@pytest.fixture(scope="module")
def phi3_family():
    register_llm_family(PHI3_LIKE)  # the one place
    yield PHI3_LIKE
    unregister_llm_family(PHI3_LIKE.name)


def train_argv(vision, llm, out, *extra):
    return [
        "--model_name_or_path", str(llm), "--vision_tower", str(vision),
        "--image_folder", str(SHIPPED_DATA), "--output_dir", str(out), "--report_to", "none",
        "--per_device_train_batch_size", "4", "--dataloader_num_workers", "0", "--use_cpu", "True",
        "--max_steps", "2", "--save_strategy", "no", *tiny_adapter_args(), *extra,
    ]  # fmt: skip


def test_a_family_registered_in_one_place_trains_both_stages_and_serves(phi3_family, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from llava_vitsplit.train.run import train

    vision = save_tiny_vision_tower(tmp_path / "vision")
    llm = save_tiny_family_lm(tmp_path / "llm", phi3_family.name)
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    train(train_argv(vision, llm, stage1, "--data_path", str(SHIPPED_DATA / "pretrain.json"),
                     "--tune_mm_mlp_adapter", "True"))  # fmt: skip
    train(train_argv(vision, llm, stage2, "--data_path", str(SHIPPED_DATA / "finetune.json"),
                     "--pretrain_mm_mlp_adapter", str(stage1)))  # fmt: skip

    processor = AutoProcessor.from_pretrained(stage2)
    assert processor.llm_family == "phi3_like" and processor.chat_template == PHI3_LIKE_TEMPLATE
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == "<|user|>\n<image>\nColour?<|end|>\n<|assistant|>\n"
    end = processor.tokenizer.convert_tokens_to_ids("<|end|>")
    assert processor.tokenizer.eos_token_id == end
    generation = json.loads((stage2 / "generation_config.json").read_text())
    assert generation["eos_token_id"][0] == end
    model = AutoModelForImageTextToText.from_pretrained(stage2)
    assert type(model.model.language_model).__name__ == "Phi3Model"

    dataset = LazySupervisedDataset(SHIPPED_DATA / "finetune.json", processor, image_folder=SHIPPED_DATA)
    item = dataset[0]
    targets = item["input_ids"][item["labels"] != IGNORE_INDEX].tolist()
    replies = json.loads((SHIPPED_DATA / "finetune.json").read_text())[0]["conversations"][1::2]
    assert processor.tokenizer.decode(targets) == "".join(r["value"] + "<|end|>" for r in replies)


def test_lora_targets_the_familys_modules(phi3_family, tmp_path):
    from llava_vitsplit.train.run import train

    vision = save_tiny_vision_tower(tmp_path / "vision")
    llm = save_tiny_family_lm(tmp_path / "llm", phi3_family.name)
    out = tmp_path / "lora"
    train(train_argv(vision, llm, out, "--data_path", str(SHIPPED_DATA / "finetune.json"),
                     "--lora_enable", "True", "--lora_r", "4", "--lora_alpha", "8", "--max_steps", "1"))  # fmt: skip
    adapter = json.loads((out / "adapter_config.json").read_text())
    for name in phi3_family.lora_target_modules:
        assert name in adapter["target_modules"]


def test_unknown_model_type_and_tokenizer_name_the_supported_families():
    tokenizer = make_family_tokenizer("qwen3")
    with pytest.raises(LLMFamilyError, match="model_type 'mamba'.*supported families.*qwen3 \\(qwen3\\)"):
        family_for("mamba", tokenizer)
    with pytest.raises(LLMFamilyError, match="'gemma3_text'.*supported families"):
        family_for("gemma3_text", tokenizer)  # a Qwen tokenizer has no Gemma turn tokens
